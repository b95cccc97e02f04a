/**
 * Ctrl-C leaves no temp folder behind: `run` on a model folder (which partitions into a
 * `nanomind-model-*` temp brick set) and `partition` (which writes into a hidden `.OUT.tmp-*` sibling)
 * are interrupted while their temp folder exists. Oracle: the file system, listed after the exit.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { BIN } from '../cli-helper.js';

let root: string;
beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'nanomind-interrupt-')); });
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

/** Starts the CLI, waits until `watch` holds an entry matching `pattern`, sends SIGINT; exit code and entries seen. */
async function interrupt(args: string[], env: NodeJS.ProcessEnv, watch: string, pattern: RegExp): Promise<{ code: number | null; seen: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  let seen = '';
  for (let i = 0; i < 2000 && !seen && child.exitCode === null; i++) {
    seen = (await readdir(watch)).find((f) => pattern.test(f)) ?? '';
    if (!seen) await new Promise((r) => setTimeout(r, 10));
  }
  child.kill('SIGINT');
  const code = await exited;
  if (!seen) throw new Error(`no ${pattern} appeared in ${watch} before the exit: ${stderr}`);
  return { code, seen };
}

describe('Ctrl-C', () => {
  it('run on a model folder: exit 130 and its nanomind-model-* temp brick set is gone', async () => {
    const tmp = join(root, 'tmp-run');
    await mkdir(tmp);
    const r = await interrupt(['run', EMBEDDED_MODEL, '--prompt', 'describe the image.', '--max-tokens', '200'], { TMPDIR: tmp }, tmp, /^nanomind-model-/);
    expect(r.code).toBe(130);
    expect(await readdir(tmp)).toEqual([]);
  }, 60_000);

  it('partition: exit 130 and its hidden .OUT.tmp-* folder is gone', async () => {
    const outs = join(root, 'outs');
    await mkdir(outs);
    const r = await interrupt(['partition', join(EMBEDDED_MODEL, 'monolithic', 'model.onnx'), '-o', join(outs, 'bricks')], {}, outs, /^\.bricks\.tmp-/);
    expect(r.code).toBe(130);
    expect(await readdir(outs)).toEqual([]);
  }, 60_000);

  it('a program with its own SIGINT handler (a server) keeps control; the temp folder is still removed', async () => {
    const tmp = join(root, 'tmp-own');
    await mkdir(tmp);
    const script = `
      const { makeTemp } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'dist', 'util', 'temp.js'))});
      const dir = await makeTemp('own');
      process.on('SIGINT', () => { console.log('own handler'); setTimeout(() => process.exit(0), 20); });
      process.kill(process.pid, 'SIGINT');
      setTimeout(() => {}, 5000);`;
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const c = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, TMPDIR: tmp } });
      let stdout = '';
      c.stdout.on('data', (d) => { stdout += d; });
      c.on('exit', (code) => resolve({ code, stdout }));
    });
    expect(out).toEqual({ code: 0, stdout: 'own handler\n' });
    expect(await readdir(tmp)).toEqual([]);
  });
});
