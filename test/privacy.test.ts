/**
 * Privacy: nanomind writes nothing outside the outputs it was asked for and opens no socket that leaves
 * the machine. Oracles: the file system itself (HOME and TMPDIR are fresh empty folders, listed after
 * each command) and the kernel (strace's record of every connect/sendto/sendmsg with an address).
 * ORT_DISABLE_TELEMETRY is removed from the children's environment, so what is checked is nanomind's
 * own setting: without it, onnxruntime-node 1.30 writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../src/eval/embedded.js';
import { BIN } from './cli-helper.js';

const SRC = join(import.meta.dirname, '..', 'src');
const hasStrace = spawnSync('strace', ['-V']).status === 0;

let root: string, home: string, tmp: string, out: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-privacy-'));
  [home, tmp, out] = ['home', 'tmp', 'out'].map((d) => join(root, d));
  await Promise.all([home, tmp, out].map((d) => mkdir(d)));
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

/** Every file and folder under `dir`, relative. */
async function listing(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

/**
 * The environment of a child: HOME and TMPDIR empty folders, and none of the variables that turn ORT's
 * telemetry off by themselves: ORT_DISABLE_TELEMETRY, and CI / GITHUB_ACTIONS / TF_BUILD, which
 * onnxruntime 1.30 also honours (checked here: with CI=true nothing is written even without ours), so
 * that what is checked is nanomind's own switch, in CI as on a personal machine.
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, TMPDIR: tmp };
  for (const k of ['ORT_DISABLE_TELEMETRY', 'CI', 'GITHUB_ACTIONS', 'TF_BUILD', 'XDG_CACHE_HOME']) delete env[k];
  return env;
}

/** Runs `node argv` (under strace when it is installed), with stdin; returns exit code, output and the trace. */
function run(argv: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string; trace: string | null }> {
  const traceFile = join(root, `trace-${Math.random().toString(36).slice(2)}.txt`);
  const [cmd, args] = hasStrace
    ? ['strace', ['-f', '-e', 'trace=connect,sendto,sendmsg', '-o', traceFile, process.execPath, ...argv]]
    : [process.execPath, argv];
  return new Promise((resolve) => {
    const child = execFile(cmd, args as string[], { env: childEnv(), maxBuffer: 64 << 20 }, async (e, stdout, stderr) => {
      const trace = hasStrace ? await readFile(traceFile, 'utf8') : null;
      if (hasStrace) await rm(traceFile);
      resolve({ code: e ? (e as { code: number }).code : 0, stdout, stderr, trace });
    });
    child.stdin!.end(input);
  });
}

/** Addresses in a trace that are not this machine's: AF_INET(6) other than loopback. */
function remoteAddresses(trace: string): string[] {
  const found: string[] = [];
  for (const line of trace.split('\n')) {
    const v4 = /sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([\d.]+)"\)/.exec(line);
    if (v4 && !v4[2].startsWith('127.') && v4[2] !== '0.0.0.0') found.push(`${v4[2]}:${v4[1]}`);
    const v6 = /sa_family=AF_INET6, sin6_port=htons\((\d+)\).*inet_pton\(AF_INET6, "([^"]+)"/.exec(line);
    if (v6 && v6[2] !== '::1' && v6[2] !== '::' && !v6[2].startsWith('::ffff:127.')) found.push(`[${v6[2]}]:${v6[1]}`);
  }
  return found;
}

describe('privacy', () => {
  it('every source module that loads onnxruntime-node or starts a worker imports no-telemetry before it', async () => {
    const files = (await readdir(SRC, { recursive: true })).map(String).filter((f) => /\.tsx?$/.test(f));
    const checked: string[] = [];
    let staticLoaders = 0;
    for (const f of files) {
      const text = await readFile(join(SRC, f), 'utf8');
      const loadsOrt = /^import (?!type )[^;]*from 'onnxruntime-node'/m.test(text) || /import\('onnxruntime-node'\)/.test(text);
      const startsWorker = /new Worker\(/.test(text);
      if (!loadsOrt && !startsWorker) continue;
      // ES modules evaluate imports in order: the switch must come before the library (for a worker
      // starter anywhere: imports run before the module body that starts the worker).
      const off = text.search(/^import '(\.\.\/)+util\/no-telemetry\.js';/m);
      const ort = text.search(/^import (?!type )[^;]*from 'onnxruntime-node'/m);
      expect(off, `${f}: imports util/no-telemetry.js`).toBeGreaterThanOrEqual(0);
      if (ort >= 0) { expect(off, `${f}: no-telemetry before onnxruntime-node`).toBeLessThan(ort); staticLoaders++; }
      checked.push(f);
    }
    // The loaders the issue names must be among them (so this cannot pass by finding nothing).
    for (const f of ['run/backends/ort-cpu.ts', 'partition/verify.ts', 'onnx/ort-feeds.ts', 'run/workers/encoder-client.ts', 'compile/calibrate.ts'])
      expect(checked).toContain(f);
    expect(staticLoaders).toBeGreaterThanOrEqual(5); // quantize/*, partition/verify.ts, onnx/ort-feeds.ts
  });

  it('a library import of a loader turns telemetry off before a session is created', async () => {
    const r = await run(['--input-type=module', '-e', `
      await import(${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'onnx', 'ort-feeds.js'))});
      const ort = (await import('onnxruntime-node')).default;
      await ort.InferenceSession.create(${JSON.stringify(join(EMBEDDED_MODEL, 'onnx', 'embed_tokens.onnx'))});
      console.log('ok');`]);
    expect(r.stdout.trim()).toBe('ok');
    expect(await listing(home)).toEqual([]);
  });

  it('partition, run and chat write nothing to HOME or the temp dir and open no remote socket', async () => {
    const image = join(EMBEDDED_EVAL_SET, 'images', (await readdir(join(EMBEDDED_EVAL_SET, 'images')))[0]);
    const bricks = join(out, 'bricks');
    const steps = [
      await run([BIN, 'partition', EMBEDDED_MODEL, '-o', bricks]),
      await run([BIN, 'run', bricks, '--image', image, '--prompt', 'what colour is the shape?', '--max-tokens', '4']),
      await run([BIN, 'chat', bricks, '--max-tokens', '4'], `/image ${image}\nhow many shapes?\n/exit\n`),
    ];
    for (const s of steps) {
      expect(s.code, s.stderr).toBe(0);
      if (s.trace !== null) {
        expect(s.trace).toMatch(/\+\+\+ exited with 0 \+\+\+/); // strace followed the process to its end
        expect(remoteAddresses(s.trace)).toEqual([]);
      }
    }
    expect(steps[1].stdout.trim().length).toBeGreaterThan(0);
    expect(await listing(home)).toEqual([]);
    expect(await listing(tmp)).toEqual([]);
  }, 120_000);

  it.runIf(!!process.env.CI)('CI has strace (.ci/run installs it), so the socket check runs there', () => {
    expect(hasStrace).toBe(true);
  });

  it.skipIf(!hasStrace)('the strace oracle sees a remote connect (so a clean trace means something)', async () => {
    const r = await run(['-e', "require('net').connect(9, '192.0.2.1').on('error', () => {}).setTimeout(10, function () { this.destroy(); })"]);
    expect(remoteAddresses(r.trace!)).toEqual(['192.0.2.1:9']);
  });
});
