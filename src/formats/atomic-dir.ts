/**
 * Writes a whole output directory atomically: the work happens in a hidden sibling temp directory that
 * is renamed into place only when it is complete, so a failed run never leaves a half-written output.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { forgetTemp, removeTemp, trackTemp } from '../util/temp.js';

/**
 * Whether `out` may become an output directory of the kind marked by `marker`: absent, empty, or a
 * previous output holding `marker`; never a file or a foreign folder. True when it exists. Callers that
 * write several outputs (demo) check them all before writing any.
 */
export async function checkOutputDir(out: string, marker: string): Promise<boolean> {
  const target = resolve(out);
  const existing = await stat(target).catch(() => undefined);
  if (!existing) return false;
  if (!existing.isDirectory()) throw fail('E_OUTPUT_EXISTS', `${out} exists and is not a directory`, { hint: 'choose another -o path' });
  const entries = await readdir(target);
  if (entries.length && !entries.includes(marker))
    throw fail('E_OUTPUT_EXISTS', `${out} is not empty and holds no ${marker}; refusing to overwrite it`, { hint: 'choose another -o path or empty it first' });
  return true;
}

/**
 * Runs `fill(tmpDir)` and moves the result to `out`. An existing `out` is replaced only when it holds
 * `marker` (a previous output of the same kind) or is empty; anything else is refused, never deleted.
 */
export async function writeDirAtomically<T>(out: string, marker: string, fill: (tmp: string) => Promise<T>): Promise<T> {
  const target = resolve(out);
  const existing = await checkOutputDir(out, marker);
  try {
    await mkdir(dirname(target), { recursive: true });
  } catch (e) {
    throw fail('E_OUTPUT_PATH', `${out}: cannot create its parent folder (${(e as NodeJS.ErrnoException).code})`,
      { hint: 'a path above it is a file, or not writable: choose another -o path' }, e);
  }
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${tag}`);
  await mkdir(tmp);
  trackTemp(tmp);
  try {
    const result = await fill(tmp);
    if (existing) {
      const old = join(dirname(target), `.${basename(target)}.old-${tag}`);
      await rename(target, old);
      await rename(tmp, target);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, target);
    }
    forgetTemp(tmp);
    return result;
  } catch (e) {
    await removeTemp(tmp);
    throw e;
  }
}
