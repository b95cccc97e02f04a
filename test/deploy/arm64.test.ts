/**
 * `deploy` to a board that is really arm64: a Debian arm64 rootfs whose sshd, shell, Node and
 * onnxruntime-node's linux-arm64 library run under qemu-user (scripts/arm64-board.sh; built once per
 * machine by .ci/run, cached in /var/cache). The real CLI, as a user types it:
 *   deploy the embedded model's brick set → the runtime `npm install`s on arm64 (linux-arm64 binaries)
 *   → `deploy --run PROMPT --image F` answers → `chat --remote` answers too; a bundle compiled for the CPU
 *   runs its decoder on the native kernels deploy cross-compiled for the board (NEON, under qemu).
 * Oracle: the answers recorded with the model (PyTorch's, at export: models/shapes-vlm/eval/reference.json),
 * not anything this code produced. Emulated arm64 is slow: this file takes minutes, not seconds.
 * Without a built board it is skipped here with the reason, but fails under CI (.ci/run builds the board).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { partition } from '../../src/partition/index.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'nanomind.js');
const SCRIPT = join(ROOT, 'scripts', 'arm64-board.sh');

interface Board { dir: string; port: number; user: string; host: string; identity: string; knownHosts: string; root: string }

const status = await exec('bash', [SCRIPT, 'status']).then(() => undefined, (e: { stderr?: string }) => String(e.stderr ?? e).trim());
if (status && !process.env.CI) console.warn(`arm64 board tests skipped: ${status} (build it as root: bash scripts/arm64-board.sh build)`);

/** The held-out question the model answers right, per the recorded reference answers. */
async function question(): Promise<{ image: string; question: string; answer: string }> {
  const reference = JSON.parse(await readFile(join(EMBEDDED_EVAL_SET, 'reference.json'), 'utf8')).answers as Record<string, string>;
  const rows = (await readFile(join(EMBEDDED_EVAL_SET, 'eval.jsonl'), 'utf8')).trim().split('\n')
    .map((l) => JSON.parse(l) as { id: string; image: string; question: string; answer: string; modality: string });
  const r = rows.find((x) => x.modality === 'typed' && x.question === 'what color is the circle?' && reference[x.id] === x.answer)!;
  return { image: join(EMBEDDED_EVAL_SET, r.image), question: r.question, answer: r.answer };
}

describe.skipIf(!!status && !process.env.CI)('deploy to an emulated arm64 board (qemu-user, Debian arm64 rootfs)', () => {
  let board: Board;
  let work: string;
  let bricks: string;
  let to: string;
  let ssh: string[];
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try { return await f(); } finally { timings[name] = Math.round(performance.now() - t0) / 1000; }
  };

  beforeAll(async () => {
    if (status) throw new Error(`the arm64 test board is not available under CI: ${status}`);
    const started = await timed('board start', () => exec('bash', [SCRIPT, 'start']));
    board = JSON.parse(started.stdout.trim().split('\n').pop()!) as Board;
    work = await mkdtemp(join(tmpdir(), 'nanomind-arm64-'));
    bricks = join(work, 'bricks');
    await partition({ input: EMBEDDED_MODEL, out: bricks });
    to = `ssh://${board.user}@${board.host}:${board.port}/~/models/shapes-vlm`;
    ssh = ['--identity', board.identity, '--known-hosts', board.knownHosts];
  }, 300_000);

  afterAll(async () => {
    console.info(`arm64 board timings (s): ${JSON.stringify(timings)}`);
    if (board) await exec('bash', [SCRIPT, 'stop', board.dir]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A command on the board, through the same key and known_hosts (host key checked). */
  const onBoard = (cmd: string) => exec('ssh', ['-i', board.identity, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${board.knownHosts}`,
    '-o', 'BatchMode=yes', '-p', String(board.port), `${board.user}@${board.host}`, cmd]);

  it('deploy installs the runtime on arm64 and `--run PROMPT --image F` answers the picture\'s question', async () => {
    const q = await question();
    const r = await timed('deploy + runtime install + run', () => exec(process.execPath, [BIN, 'deploy', bricks, '--to', to, ...ssh,
      '--run', q.question, '--image', q.image, '--json'], { maxBuffer: 64 << 20 }));
    const out = JSON.parse(r.stdout);
    expect(out.readiness.arch).toBe('aarch64');
    expect(out.readiness.node).toMatch(/^v20\./);
    expect(out.verified).toBe(true);
    expect(out.runtime.action).toBe('installed');
    expect(out.run.exitCode).toBe(0);
    expect(out.run.stdout.trim()).toBe(q.answer);
    // The image went over as a copy beside the bundle, and the copy is gone again.
    expect(out.run.command).toContain('--image');
    const left = await onBoard('ls -a models');
    expect(left.stdout.split('\n').filter((n: string) => n.includes('.inputs-'))).toEqual([]);
    // npm picked the linux-arm64 builds: ONNX Runtime's native binding loads in an arm64 Node there, and sharp's arm64 package is what got installed.
    const probe = await onBoard('cd .nanomind/runtime/node_modules/nanomind && node -e "' +
      "const o=require('onnxruntime-node');process.stdout.write(process.platform+'-'+process.arch+' '+(typeof o.InferenceSession.create)+'\\n')" +
      '" && ls ../@img');
    expect(probe.stdout.split('\n')[0]).toBe('linux-arm64 function');
    expect(probe.stdout).toMatch(/^sharp-linux-arm64$/m);
    expect(probe.stdout).not.toMatch(/x64/);
    // deploy cross-compiled the native kernels for the board and shipped them with the runtime
    expect(out.notes).toContain('native kernels for the board: cross-compiled for aarch64');
  }, 1_200_000);

  it('a bundle compiled for the CPU runs its decoder on the native kernels (arm64 NEON) and answers', async () => {
    const q = await question();
    const bundle = join(work, 'bundle');
    const c = await compile({ bricks, target: 'host', out: bundle, rknn: 'skip' }); // --engine auto: the decoder packed at Q8
    expect(c.manifest.files.some((f) => f.path.endsWith('.nmq'))).toBe(true);
    const d = await timed('deploy native bundle', () => exec(process.execPath, [BIN, 'deploy', bundle, '--to',
      `ssh://${board.user}@${board.host}:${board.port}/~/models/shapes-native`, ...ssh, '--json'], { maxBuffer: 64 << 20 }));
    expect(JSON.parse(d.stdout).verified).toBe(true);
    await exec('scp', ['-q', '-i', board.identity, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${board.knownHosts}`, '-o', 'BatchMode=yes',
      '-P', String(board.port), q.image, `${board.user}@${board.host}:native.png`]);
    const cli = 'node .nanomind/runtime/node_modules/nanomind/bin/nanomind.js';
    const r = await timed('run on the native kernels', () => onBoard(`${cli} run models/shapes-native --prompt '${q.question}' --image native.png --json`));
    const out = JSON.parse(r.stdout) as { text: string; stats: { backends: Record<string, string> } };
    expect(out.stats.backends.decoder).toBe('native');
    expect(out.text.trim()).toBe(q.answer);
    // the engine's own dispatch there: an arm64 path (qemu's default CPU has the dot-product extension)
    const simd = await onBoard('cd .nanomind/runtime/node_modules/nanomind && node -e "' +
      "process.stdout.write(require('./prebuilds/linux-arm64/nanomind_kernels.node').simd())" + '"');
    expect(['neon-dotprod', 'neon']).toContain(simd.stdout.trim());
  }, 900_000);

  it('chat --remote with --identity and --known-hosts answers on the board', async () => {
    const q = await question();
    // The picture must be on the board for the remote chat's /image.
    await exec('scp', ['-q', '-i', board.identity, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${board.knownHosts}`, '-o', 'BatchMode=yes',
      '-P', String(board.port), q.image, `${board.user}@${board.host}:circle.png`]);
    const stdout = await timed('chat --remote', () => new Promise<string>((ok, no) => {
      const p = spawn(process.execPath, [BIN, 'chat', '--remote', to, ...ssh, '--json', '--max-tokens', '8'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let so = '';
      let se = '';
      p.stdout.on('data', (d: Buffer) => { so += d.toString(); });
      p.stderr.on('data', (d: Buffer) => { se += d.toString(); });
      p.on('close', (code) => (code === 0 ? ok(so) : no(new Error(`chat --remote exited ${code}: ${se}`))));
      p.stdin.end(`/image circle.png\n${q.question}\n`);
    }));
    const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { info?: string; text?: string });
    expect(lines[0]?.info).toContain('circle.png');
    expect(lines.filter((l) => l.text !== undefined).map((l) => l.text!.trim())).toEqual([q.answer]);
  }, 600_000);
});
