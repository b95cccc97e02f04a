/**
 * The error and exit-code rules of docs/cli.md, for every verb, through the built CLI: usage errors
 * exit 2, failures exit 1 with one `error[E_…]` line and no stack trace, and under --json stdout holds
 * the error JSON and nothing else. Oracle: the rules as written in docs/cli.md (codes, not messages).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL } from '../src/eval/embedded.js';
import { BIN } from './cli-helper.js';

const VERBS = ['demo', 'pull', 'inspect', 'partition', 'quantize', 'compile', 'plan', 'run', 'chat', 'serve', 'bench', 'eval', 'deploy', 'doctor'] as const;

let root: string, bricks: string, bundle: string, home: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-discipline-'));
  home = join(root, 'home');
  await mkdir(home);
  bricks = join(root, 'bricks');
  bundle = join(root, 'bundle');
  expect((await cli(['partition', EMBEDDED_MODEL, '-o', bricks])).code).toBe(0);
  expect((await cli(['compile', bricks, '--target', 'rk3588', '-o', bundle])).code).toBe(0);
}, 60_000);
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

interface Result { code: number; stdout: string; stderr: string }
/** The CLI with stdin closed and a fresh HOME (no hub cache, no ssh config). */
function cli(args: readonly string[]): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true', HOME: home, HF_HOME: join(home, 'hf') }, maxBuffer: 64 << 20 },
      (e, stdout, stderr) => resolve({ code: e ? (e as { code: number }).code : 0, stdout, stderr }));
    child.stdin!.end();
  });
}

/** Runs all, two at a time (the CI machine has two cores). */
async function all<T>(items: readonly T[], fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const worker = async () => { for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x); };
  await Promise.all([worker(), worker()]);
}

/** A failure as docs/cli.md says: exit `exit`, `error[CODE]` first on stderr (text) or only the JSON on stdout (--json). */
async function expectError(args: readonly string[], exit: 1 | 2, code?: string): Promise<{ code: string; message: string; hint?: string; notes?: string[] }> {
  const text = await cli(args);
  const where = args.join(' ');
  expect(text.code, `${where}\n${text.stderr}`).toBe(exit);
  expect(text.stderr, where).not.toMatch(/internal error|\n\s+at /);
  if (exit === 1 || code !== undefined && code !== 'E_USAGE') expect(text.stderr.split('\n')[0], where).toMatch(code ? `error[${code}] ` : /^error\[E_[A-Z0-9_]+\] /);
  const json = await cli([...args, '--json']);
  expect(json.code, `${where} --json`).toBe(exit);
  expect(json.stderr, `${where} --json: stderr`).toBe('');
  const parsed = JSON.parse(json.stdout) as { error: { code: string; message: string; hint?: string; notes?: string[] } };
  expect(Object.keys(parsed)).toEqual(['error']);
  if (code) expect(parsed.error.code, where).toBe(code);
  else expect(parsed.error.code, where).toMatch(/^E_[A-Z0-9_]+$/);
  return parsed.error;
}

describe('exit codes and error output, every verb', () => {
  it('nanomind alone exits 2 with the help on stderr; --help exits 0', async () => {
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/^Usage: nanomind/);
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const v of VERBS) expect(help.stdout).toContain(`  ${v} `);
    await expectError(['frobnicate'], 2, 'E_USAGE');
  });

  it('an unknown flag: exit 2, E_USAGE, with a hint; under --json only the JSON', async () => {
    await all(VERBS, async (v) => {
      const e = await expectError([v, '--no-such-flag'], 2, 'E_USAGE');
      expect(e.hint).toMatch(/\S/);
    });
  });

  it('a missing argument: exit 2', async () => {
    await all(['pull', 'inspect', 'partition', 'quantize', 'compile', 'plan', 'run', 'deploy', 'chat', 'serve'] as const, async (v) => {
      await expectError([v], 2, 'E_USAGE');
    });
  });

  it('an input that does not exist: exit 1, one error line, no stack trace', async () => {
    const nope = join(root, 'nope');
    const out = join(root, 'never');
    await all<readonly string[]>([
      ['inspect', nope], ['partition', nope, '-o', out], ['quantize', nope, '-o', out], ['compile', nope, '--target', 'rk3588', '-o', out],
      ['plan', nope], ['run', nope, '--prompt', 'hi'], ['chat', nope], ['doctor', nope], ['bench', nope], ['eval', nope], ['deploy', nope, '--to', 'ssh://nobody@127.0.0.1:1/x'],
      ['pull', 'nobody/nothing', '--offline'],
    ], async (args) => { await expectError(args, 1); });
    expect(await readdir(root)).not.toContain('never');
  });

  it('flag values are checked where they are parsed: out of range or naming nothing → exit 2', async () => {
    await all<readonly string[]>([
      ['run', bricks, '--prompt', 'hi', '--top-p', '2'], ['run', bricks, '--prompt', 'hi', '--temperature', '-1'],
      ['chat', bricks, '--top-p', '0'], ['run', bricks, '--prompt', 'hi', '--seed', '-1'],
      ['quantize', bricks, '-o', join(root, 'q'), '--brick', 'nonsense=w4'],
      ['quantize', bricks, '-o', join(root, 'q'), '--accuracy-level', '9'],
      ['compile', bricks, '--target', 'rk3588', '-o', join(root, 'b'), '--place', 'decoder=tpu'],
      ['compile', bricks, '--target', 'rk3588', '-o', join(root, 'b'), '--place', 'nonsense=npu'],
      ['compile', bricks, '--target', 'rk3588', '-o', join(root, 'b'), '--max-context', '100000'],
    ], async (args) => { await expectError(args, 2, 'E_USAGE'); });
    // A known brick with an unknown format is the quantizer's own refusal, with the formats as hint.
    expect((await expectError(['quantize', bricks, '-o', join(root, 'q'), '--brick', 'decoder=w4'], 1, 'E_QUANT_FORMAT')).hint).toMatch(/w4a16/);
    expect(await readdir(root)).not.toContain('q');
  });

  it('the --cut hint names a command that lists the value names --cut takes', async () => {
    const mono = join(EMBEDDED_MODEL, 'monolithic', 'model.onnx');
    const e = await expectError(['partition', mono, '-o', join(root, 'cut'), '--cut', 'vision=/nope'], 1, 'E_PARTITION_CUT');
    expect(e.hint).toContain('inspect MODEL --values');
    const r = await cli(['inspect', mono, '--values', '--json']);
    expect(r.code).toBe(0);
    const values = JSON.parse(r.stdout).files[0].values as { name: string; op: string }[];
    expect(values.length).toBeGreaterThan(100);
    expect(values.map((v) => v.name)).toContain('/embed_tokens/Gather_output_0');
  });

  it('output paths: refused before any work, with a hint, leaving nothing behind', async () => {
    const file = join(root, 'a-file');
    await writeFile(file, 'x');
    const foreign = join(root, 'foreign');
    await mkdir(join(foreign, 'bundle'), { recursive: true });
    await writeFile(join(foreign, 'bundle', 'mine.txt'), 'not a bundle');
    const cases: [readonly string[], string][] = [
      [['plan', bundle, '--svg', join(root, 'missing', 'p.svg')], 'E_OUTPUT_PATH'], [['plan', bundle, '--svg', root], 'E_OUTPUT_PATH'],
      [['plan', bundle, '--trace', join(root, 'missing', 't.json')], 'E_OUTPUT_PATH'], [['plan', bundle, '--trace', root], 'E_OUTPUT_PATH'],
      [['demo', '-o', file], 'E_OUTPUT_EXISTS'], [['demo', '-o', foreign], 'E_OUTPUT_EXISTS'],
      [['partition', EMBEDDED_MODEL, '-o', join(file, 'sub')], 'E_OUTPUT_PATH'],
    ];
    await all(cases, async ([args, code]) => {
      const e = await expectError(args, 1, code);
      expect(e.hint, args.join(' ')).toMatch(/\S/);
    });
    expect((await readdir(foreign)).sort()).toEqual(['bundle']);
    expect(await readdir(join(foreign, 'bundle'))).toEqual(['mine.txt']);
    expect(await readdir(root)).not.toContain('missing');
  }, 60_000);

  it('a truncated WAV is refused as audio input (E_AUDIO, exit 1)', async () => {
    const wav = join(root, 'short.wav');
    const b = Buffer.alloc(30);
    b.write('RIFF', 0); b.writeUInt32LE(22, 4); b.write('WAVE', 8); b.write('fmt ', 12); b.writeUInt32LE(16, 16);
    await writeFile(wav, b);
    await expectError(['run', bricks, '--audio', wav, '--prompt', 'hi'], 1, 'E_AUDIO');
  });
});
