import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { fail } from '../errors.js';
import { collect, ENGINE_OPTION, parseEngine, parseNumber, samplingFlags } from './flags.js';
import { openRuntimeModel } from './open-model.js';

interface ChatFlags {
  system?: string; maxTokens?: string; temperature?: string; topK?: string; topP?: string; repetitionPenalty?: string;
  seed?: string; stop: string[]; threads?: string; engine?: string; context?: string; json?: boolean; remote?: string; powerSupply?: string;
  identity?: string; knownHosts?: string; sshConfig?: string; runtimeDir: string;
}

export const chatVerb = (program: Command) => program
  .command('chat [model]')
  .description('chat with a brick set, bundle or model folder in the terminal (line by line when stdin is not a terminal); [model] is required unless --remote')
  .option('--system <text>', 'system message')
  .option('--max-tokens <n>', 'new tokens per answer at most', '256')
  .option('--temperature <t>', "0 = greedy (default: the model's generation_config, greedy if none)")
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
  .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
  .option('--repetition-penalty <r>', 'HF repetition penalty (1 = off)')
  .option('--seed <s>', 'sampling seed (reproducible runs)')
  .option('--stop <text>', 'end an answer when it contains this text (repeatable)', collect, [])
  .option('--threads <n>', 'CPU threads per brick (default: ONNX Runtime decides)')
  .option(...ENGINE_OPTION)
  .option('--context <n>', "tokens the conversation may hold (default: the model's, at most 4096)")
  .option('--json', 'without a terminal: one JSON line per answer ({text, tokens, stopReason, stats})')
  .option('--power-supply <dir>', 'where the battery is read (default /sys/class/power_supply; a test folder laid out the same)')
  .option('--remote <url>', 'chat with a bundle deployed on a board: ssh://user@host[:port]/path (runs there, UI here)')
  .option('--identity <key>', 'with --remote: ssh private key (as for deploy)')
  .option('--known-hosts <file>', 'with --remote: known_hosts file to check the board\'s host key against (as for deploy)')
  .option('--ssh-config <file>', 'with --remote: ssh_config to use instead of ~/.ssh/config')
  .option('--runtime-dir <dir>', 'with --remote: the runtime folder deploy installed on the board', '.nanomind/runtime')
  .action(async (model: string | undefined, f: ChatFlags) => {
    if (!f.remote && (f.identity || f.knownHosts || f.sshConfig))
      throw fail('E_USAGE', '--identity, --known-hosts and --ssh-config are for chat --remote ssh://…');
    if (f.remote) {
      const { openRemoteSession } = await import('../deploy/remote.js');
      process.exitCode = await openRemoteSession(f.remote, ['chat', '{bundle}', ...forwardedFlags(f)],
        { ssh: { identity: f.identity, knownHosts: f.knownHosts, config: f.sshConfig }, runtimeDir: f.runtimeDir });
      return;
    }
    if (!model) throw fail('E_USAGE', 'chat needs a brick set or bundle directory (or --remote ssh://…)');
    const threads = parseNumber('--threads', f.threads, { min: 1, integer: true });
    const options = {
      system: f.system, sampling: samplingFlags(f), stopStrings: f.stop,
      maxNewTokens: parseNumber('--max-tokens', f.maxTokens, { min: 1, integer: true }),
      maxContext: parseNumber('--context', f.context, { min: 2, integer: true }),
    };
    const { Conversation } = await import('../chat/session.js');
    const opened = await openRuntimeModel(model, { threads, engine: parseEngine(f.engine) });
    if (opened.model.set.seq2seq) {
      const vision = !!opened.model.set.seq2seq.vision;
      await opened.close();
      throw fail('E_USAGE', `${model}: ${vision ? 'a vision' : 'a speech-to-text'} (encoder-decoder) model does not chat`,
        { hint: vision ? `run one task on one image: nanomind run ${model} --image picture.png --prompt '<CAPTION>'` : `transcribe with: nanomind run ${model} --audio clip.wav` });
    }
    const { powerMonitor, thresholdsFrom, transitionLine } = await import('../run/power/policy.js');
    const tty = process.stdin.isTTY && process.stdout.isTTY && !f.json;
    // Thresholds from the bundle's plan.json; transitions on stderr in line mode, in /stats always.
    let thresholds;
    try {
      thresholds = thresholdsFrom(opened.model.bundle?.plan.powerPolicy);
    } catch (e) {
      await opened.close();
      throw e;
    }
    const power = powerMonitor({ dir: f.powerSupply, thresholds, onTransition: tty ? undefined : (t) => process.stderr.write(`${transitionLine(t)}\n`) });
    const conversation = new Conversation(opened.model, { ...options, power, decoderThreads: threads });
    try {
      if (tty) {
        const { runChatUi } = await import('../chat/app.js');
        await runChatUi(conversation, basename(resolve(model)));
      } else {
        const { runLineChat } = await import('../chat/lines.js');
        await runLineChat(conversation, { input: process.stdin, out: process.stdout, err: process.stderr, json: f.json });
      }
    } finally {
      await opened.close(); // the conversation's model, and a model folder's temp bricks
    }
  });

/** The flags a remote chat should see, as given here. */
function forwardedFlags(f: ChatFlags): string[] {
  const pairs: [string, string | undefined][] = [
    ['--system', f.system], ['--max-tokens', f.maxTokens], ['--temperature', f.temperature], ['--top-k', f.topK], ['--top-p', f.topP],
    ['--repetition-penalty', f.repetitionPenalty], ['--seed', f.seed], ['--threads', f.threads], ['--engine', f.engine === 'auto' ? undefined : f.engine], ['--context', f.context],
  ];
  return [...pairs.flatMap(([k, v]) => (v === undefined ? [] : [k, v])), ...f.stop.flatMap((s) => ['--stop', s]), ...(f.json ? ['--json'] : [])];
}
