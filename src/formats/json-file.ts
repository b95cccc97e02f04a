/** Small helpers for the JSON manifests every stage writes: atomic writes, parse errors with the path. */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { fail } from '../errors.js';

export async function readJsonFile(file: string, code: `E_${string}`): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    throw fail(code, `${file}: ${c === 'ENOENT' ? 'no such file' : `cannot read (${c})`}`, { file }, e);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(code, `${file}: invalid JSON (${(e as Error).message})`, { file }, e);
  }
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
