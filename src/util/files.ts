/** Path safety and hashing for files named by manifests and models (no protobuf: the runtime uses this). */
import { createHash } from 'node:crypto';
import { open, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { fail } from '../errors.js';

const CHUNK = 16 << 20;

/**
 * Checks, before any work, that `file` (named by `flag`, e.g. `--svg`) can be written: its folder
 * exists and it is not itself a folder. Output files are written whole or not at all by their writers.
 */
export async function checkOutputFile(file: string, flag: string): Promise<void> {
  const parent = await stat(dirname(resolve(file))).catch(() => undefined);
  if (!parent?.isDirectory())
    throw fail('E_OUTPUT_PATH', `${flag} ${file}: the folder ${dirname(resolve(file))} does not exist`, { hint: 'create it first, or choose another path' });
  const st = await stat(file).catch(() => undefined);
  if (st && !st.isFile()) throw fail('E_OUTPUT_PATH', `${flag} ${file}: is a ${st.isDirectory() ? 'directory' : 'special file'}`, { hint: `give ${flag} a file name, e.g. ${file.replace(/\/$/, '')}/plan.${flag === '--svg' ? 'svg' : 'json'}` });
}

/**
 * The folder links may point into: `dir` itself, or for a Hugging Face cache snapshot
 * (`models--ORG--NAME/snapshots/REV/...`, whose files are links to `../../blobs/SHA`) the repo's cache
 * folder `models--ORG--NAME`.
 */
export function linkRoot(dir: string): string {
  const parts = dir.split(sep);
  for (let i = parts.length - 2; i >= 1; i--)
    if (parts[i] === 'snapshots' && parts[i - 1].startsWith('models--')) return parts.slice(0, i).join(sep) || sep;
  return dir;
}

/**
 * Refuses a file whose real location (symlinks followed) is outside `dir`'s: a symlink in a model
 * folder pointing elsewhere escapes the folder as a `../` external-data path would.
 */
export async function realInside(dir: string, path: string, what: string): Promise<void> {
  const [root, real] = await Promise.all([realpath(linkRoot(resolve(dir))), realpath(path)]);
  const rel = relative(root, real);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
    throw fail('E_PATH_ESCAPE', `${what}: ${path} is a link to ${real}, outside ${dir}`,
      { hint: 'copy the file into the model folder instead of linking to it' });
}

/** Resolves a relative path from a model or manifest, refusing any that leaves `dir`. */
export function resolveInside(dir: string, location: string, what: string): string {
  const full = resolve(dir, location);
  const rel = relative(dir, full);
  if (isAbsolute(location) || rel === '' || rel.startsWith('..') || isAbsolute(rel) || location.includes('\0'))
    throw fail('E_PATH_ESCAPE', `${what}: path '${location}' escapes the directory ${dir}`,
      { hint: 'referenced files must live inside the model or bundle directory' });
  return full;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

export const isPathInside = (dir: string, p: string): boolean => {
  const rel = relative(dir, p);
  return rel !== '' && !rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel);
};
