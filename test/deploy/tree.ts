/** The oracle of the deploy tests: the sha256 of every file under a folder, keyed by relative path. */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Every file below `dir` → its sha256 (a missing folder is an empty tree). */
export async function tree(dir: string, base = dir): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) Object.assign(out, await tree(p, base));
    else out[relative(base, p)] = sha(await readFile(p));
  }
  return out;
}
