import type { Command } from 'commander';
import type { DeployResult, ReadinessRow } from '../deploy/index.js';
import { fail } from '../errors.js';
import { parseNumber } from './flags.js';
import { bytes, emit, table } from './output.js';
import { renderDoctor, type DoctorReport } from './doctor.js';
import { stageProgress, type StageProgress } from './progress.js';

interface DeployFlags {
  to: string; identity?: string; knownHosts?: string; sshConfig?: string; copy: string; skipRuntime?: boolean;
  runtimeDir?: string; run?: string; image: string[]; audio: string[]; doctor?: boolean; json?: boolean; serve?: boolean; port: string; apiKey?: string; serveHost?: string;
}

const COPY = ['auto', 'rsync', 'scp'] as const;
/** Repeatable file flags: each value whole (a file name may hold commas). */
const repeat = (v: string, prev: string[]) => [...prev, v];

export const deployVerb = (program: Command) => program
  .command('deploy <bundle-dir>')
  .description('check a board, copy a bundle or brick set there (only changed files, swapped in atomically) and install the runtime')
  .requiredOption('--to <url>', 'ssh://[user@]host[:port]/path (/~/dir = under the remote home) or adb://SERIAL/path')
  .option('--identity <key>', 'ssh private key (default: your ssh config and agent)')
  .option('--known-hosts <file>', 'known_hosts file to check the board\'s host key against (default: ~/.ssh/known_hosts)')
  .option('--ssh-config <file>', 'ssh_config to use instead of ~/.ssh/config')
  .option('--copy <method>', 'auto | rsync | scp (auto: rsync when both ends have it)', 'auto')
  .option('--skip-runtime', 'do not check or install the nanomind runtime on the board')
  .option('--runtime-dir <dir>', 'runtime folder on the board, relative to its home unless absolute', '.nanomind/runtime')
  .option('--run <prompt>', 'afterwards, run `nanomind run <bundle> --prompt PROMPT` on the board and stream its output')
  .option('--image <file>', 'with --run: an image for the prompt, sent to the board for the run (repeatable)', repeat, [])
  .option('--audio <file>', 'with --run: a WAV file for the prompt, sent to the board for the run (repeatable)', repeat, [])
  .option('--serve', 'afterwards, (re)start `nanomind serve` on the board (systemd user unit, else a detached process) and print its URL')
  .option('--port <n>', 'with --serve: the port on the board', '8080')
  .option('--api-key <key>', 'with --serve: require this Bearer key and listen on the network (default: $NANOMIND_API_KEY; without a key: the board\'s loopback only)')
  .option('--serve-host <addr>', 'with --serve: the address to bind on the board (default 0.0.0.0 with a key, else 127.0.0.1)')
  .option('--doctor', 'afterwards, run `nanomind doctor` on the board: its probes, and each brick on its backend vs the CPU')
  .option('--json', 'print the result as JSON')
  .action(async (dir: string, f: DeployFlags) => {
    const { deploy } = await import('../deploy/index.js');
    if (!(COPY as readonly string[]).includes(f.copy)) throw fail('E_USAGE', `--copy '${f.copy}': expected ${COPY.join(', ')}`);
    // The bar starts after the readiness table, so the two never draw over each other.
    let progress: StageProgress | undefined;
    let result: DeployResult;
    try {
      result = await deploy({
        bundle: dir, to: f.to, skipRuntime: f.skipRuntime, runtimeDir: f.runtimeDir,
        ssh: { identity: f.identity, knownHosts: f.knownHosts, config: f.sshConfig, copy: f.copy as (typeof COPY)[number] },
        run: f.run === undefined ? undefined : ['run', '{bundle}', '--prompt', f.run], doctor: f.doctor,
        runInputs: [...f.image.map((file) => ({ flag: '--image' as const, file })), ...f.audio.map((file) => ({ flag: '--audio' as const, file }))],
        serve: f.serve ? {
          port: parseNumber('--port', f.port, { min: 1, integer: true })!, host: f.serveHost,
          apiKey: f.apiKey ?? (process.env.NANOMIND_API_KEY || undefined),
        } : undefined,
        probeFreeKb: parseNumber('NANOMIND_PROBE_FREE_KB', process.env.NANOMIND_PROBE_FREE_KB, { min: 0 }),
        onStage: (s) => progress?.stage(s),
        onReadiness: (rows) => { if (!f.json) process.stderr.write(renderReadiness(rows)); progress = stageProgress(undefined, f.json); },
        onFile: (rel) => progress?.stage(`sent ${rel}`),
        // Remote output streams through as it comes; with --json it is in the result instead.
        onOutput: (stream, s) => { if (!f.json) (stream === 'stdout' ? process.stdout : process.stderr).write(s); },
      });
    } finally {
      progress?.stop();
    }
    emit(result, f.json, (r) => {
      let out = `${r.kind === 'bundle' ? 'bundle' : 'brick set'} → ${r.target} (${r.method})\n`;
      out += `  sent ${r.transferred.length} file(s), ${bytes(r.bytesTransferred)}; unchanged ${r.unchanged.length}; resumed ${r.resumed.length}\n`;
      for (const p of r.transferred) out += `    + ${p}\n`;
      out += `  verified: ${r.verified ? 'every file matches its sha256 on the board' : 'NO'}\n`;
      out += `  runtime: ${r.runtime.action === 'skip' ? 'not checked (--skip-runtime)' : r.runtime.action === 'up-to-date' ? `nanomind ${r.runtime.remote} (up to date)` : `installed nanomind ${r.runtime.remote}`}\n`;
      if (r.run) out += `  run: exit ${r.run.exitCode}\n`;
      if (r.serve) out += `  serve: ${r.serve.url}/ (${r.serve.mode === 'systemd' ? 'systemd user unit nanomind-serve.service' : `pid ${r.serve.pid}`}${r.serve.stopped ? `, replaced ${r.serve.stopped === 'unit' ? 'the running unit' : `pid ${r.serve.stopped}`}` : ''}; log: ${r.serve.log})\n`;
      if (r.doctor) out += '\ndoctor on the board\n' + renderDoctor(r.doctor as DoctorReport);
      for (const n of r.notes) out += `note: ${n}\n`;
      return out;
    });
  });

function renderReadiness(rows: readonly ReadinessRow[]): string {
  const mark = { ok: 'ok', warn: '--', missing: 'MISSING' } as const;
  return table(['board check', 'value', ''], rows.map((r) => [r.check, r.value, mark[r.status]]));
}
