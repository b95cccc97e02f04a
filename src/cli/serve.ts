import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { ENGINE_OPTION, parseEngine, parseNumber } from './flags.js';
import { openRuntimeModel } from './open-model.js';

interface ServeFlags {
  host: string; port: string; apiKey?: string; auth: boolean; maxQueue: string; context?: string; jsonLog?: boolean; threads?: string; engine?: string;
  name?: string; maxBody?: string; maxImagePixels?: string; maxAudioSeconds?: string; powerSupply?: string;
}

export const serveVerb = (program: Command) => program
  .command('serve <model>')
  .description('serve a brick set, bundle or model over HTTP: OpenAI and Ollama APIs, a chat page at /, /health, /metrics')
  .option('--host <addr>', 'address to bind; other than loopback needs --api-key or --no-auth', '127.0.0.1')
  .option('--port <n>', 'TCP port (0: any free port)', '8080')
  .option('--api-key <key>', 'require Authorization: Bearer KEY (default: $NANOMIND_API_KEY)')
  .option('--no-auth', 'allow a non-loopback --host without an API key')
  .option('--max-queue <n>', 'requests that may wait for the decoder; more get 429', '16')
  .option('--context <n>', "tokens a conversation may hold (default: the model's, at most 4096)")
  .option('--threads <n>', 'CPU threads per brick (default: ONNX Runtime decides)')
  .option(...ENGINE_OPTION)
  .option('--name <id>', 'the model name clients use (default: the folder name)')
  .option('--max-body <bytes>', 'request body size limit', String(20 * 2 ** 20))
  .option('--max-image-pixels <n>', 'width × height limit of one image', String(4096 * 4096))
  .option('--max-audio-seconds <s>', 'length limit of one audio clip', '60')
  .option('--power-supply <dir>', 'where the battery is read for the power policy (default /sys/class/power_supply)')
  .option('--json-log', 'one JSON line per request on stderr')
  .action(async (path: string, f: ServeFlags) => {
    const { checkBind, startServer } = await import('../serve/server.js');
    const { VERSION } = await import('./main.js');
    const port = parseNumber('--port', f.port, { min: 0, integer: true })!;
    const options = {
      modelId: f.name ?? basename(resolve(path)).replace(/\.onnx$/, ''), host: f.host, port,
      apiKey: f.apiKey ?? (process.env.NANOMIND_API_KEY || undefined), noAuth: !f.auth,
      maxQueue: parseNumber('--max-queue', f.maxQueue, { min: 0, integer: true }),
      maxContext: parseNumber('--context', f.context, { min: 2, integer: true }),
      limits: {
        maxBodyBytes: parseNumber('--max-body', f.maxBody, { min: 1024, integer: true }),
        maxImagePixels: parseNumber('--max-image-pixels', f.maxImagePixels, { min: 1, integer: true }),
        maxAudioSeconds: parseNumber('--max-audio-seconds', f.maxAudioSeconds, { min: 0.1 }),
      },
      jsonLog: f.jsonLog, log: (line: string) => process.stderr.write(line + '\n'), version: VERSION,
    };
    checkBind(options);
    const threads = parseNumber('--threads', f.threads, { min: 1, integer: true });
    const opened = await openRuntimeModel(path, { threads, engine: parseEngine(f.engine) });
    try {
      // The battery as run and chat read it, with the bundle's thresholds; one stderr line per transition.
      const { powerMonitor, thresholdsFrom, transitionLine } = await import('../run/power/policy.js');
      const power = powerMonitor({ dir: f.powerSupply, thresholds: thresholdsFrom(opened.model.bundle?.plan.powerPolicy),
        onTransition: (t) => process.stderr.write(`${transitionLine(t)}\n`) });
      const server = await startServer(opened.model, { ...options, power, decoderThreads: threads });
      process.stdout.write(`nanomind serve: ${server.url} (model '${options.modelId}'; chat page at ${server.url}/, OpenAI API at ${server.url}/v1, Ollama API at ${server.url}/api)\n`);
      // Graceful stop: queued requests are refused, the running answer finishes (or is cut after 10 s).
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          process.stderr.write(`nanomind serve: ${signal}, stopping\n`);
          server.close(10_000).then(done, done);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    } finally {
      await opened.close();
    }
  });
