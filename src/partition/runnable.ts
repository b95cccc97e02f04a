/**
 * What the runtime commands accept besides a brick set or bundle: a model (an onnx-community folder or
 * a monolithic .onnx), partitioned into a temp brick set for the one run, as `eval` and `run` need.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BRICKS_FILE } from '../formats/bricks.js';
import { BUNDLE_FILE } from '../formats/bundle.js';
import { makeTemp, removeTemp } from '../util/temp.js';

export interface Runnable {
  /** A brick set or bundle directory. */
  readonly dir: string;
  /** Set when `path` was a model that was partitioned for this run. */
  readonly adopted: boolean;
  readonly cleanup: () => Promise<void>;
}

const isFile = async (p: string) => (await stat(p).catch(() => undefined))?.isFile() ?? false;

async function holdsOnnx(dir: string): Promise<boolean> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.some((n) => n.endsWith('.onnx'))) return true;
  return names.includes('onnx') && (await readdir(join(dir, 'onnx')).catch(() => [] as string[])).some((n) => n.endsWith('.onnx'));
}

/**
 * `path` itself when it is a brick set or bundle (or not a model at all: the runtime then says what is
 * wrong); else the bricks `partition` makes of it, in a temp dir that `cleanup` removes.
 */
export async function runnableDir(path: string): Promise<Runnable> {
  const dir = resolve(path);
  const st = await stat(dir).catch(() => undefined);
  const model = st?.isFile() ? dir.endsWith('.onnx')
    : !!st?.isDirectory() && !(await isFile(join(dir, BRICKS_FILE))) && !(await isFile(join(dir, BUNDLE_FILE))) && (await holdsOnnx(dir));
  if (!model) return { dir, adopted: false, cleanup: async () => {} };
  const { partition } = await import('./index.js');
  const tmp = await makeTemp('model');
  try {
    await partition({ input: dir, out: join(tmp, 'bricks') });
  } catch (e) {
    await removeTemp(tmp);
    throw e;
  }
  return { dir: join(tmp, 'bricks'), adopted: true, cleanup: () => removeTemp(tmp) };
}
