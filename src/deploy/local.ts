/**
 * What can be deployed: a bundle (`bundle.json`, compile output) or a brick set (`bricks.json`,
 * partition / quantize output), told apart by the manifest's file name. The manifest is checked with its
 * reader (every field, sizes and sha256s), then every file of the folder is listed with its sha256: that list is
 * what the board must end up with, byte for byte. Dotfiles (editor and tool leftovers) are not sent.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { BRICKS_FILE, readBricksManifest } from '../formats/bricks.js';
import { BUNDLE_FILE, readBundle } from '../formats/bundle.js';
import { sha256File } from '../onnx/model-io.js';
import type { LocalFile } from './sync.js';
import { SAFE_PATH } from './target.js';

export interface Deployable {
  readonly dir: string;
  readonly kind: 'bundle' | 'bricks';
  readonly manifest: string;
  readonly modelId: string;
  readonly files: readonly LocalFile[];
  readonly bytes: number;
}

async function walk(dir: string, rel = ''): Promise<{ rel: string; abs: string }[]> {
  const out: { rel: string; abs: string }[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const r = rel ? `${rel}/${e.name}` : e.name;
    const abs = join(dir, r);
    const s = await stat(abs);
    if (s.isDirectory()) out.push(...await walk(dir, r));
    else if (s.isFile()) out.push({ rel: r, abs });
  }
  return out;
}

export async function loadDeployable(dir: string): Promise<Deployable> {
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory()) throw fail('E_DEPLOY_NOT_BUNDLE', `${dir}: not a directory`, { hint: 'pass a bundle (nanomind compile -o DIR) or a brick set (nanomind partition -o DIR)' });
  const names = await readdir(dir);
  let kind: Deployable['kind'];
  let modelId = '';
  if (names.includes(BUNDLE_FILE)) {
    kind = 'bundle';
    modelId = (await readBundle(dir)).manifest.model.id;
  } else if (names.includes(BRICKS_FILE)) {
    kind = 'bricks';
    modelId = (await readBricksManifest(dir)).model.id;
  } else {
    throw fail('E_DEPLOY_NOT_BUNDLE', `${dir} holds neither ${BUNDLE_FILE} nor ${BRICKS_FILE}`,
      { hint: 'pass a bundle (nanomind compile -o DIR) or a brick set (nanomind partition -o DIR)' });
  }
  const listed = await walk(dir);
  const bad = listed.filter((f) => !SAFE_PATH.test(f.rel));
  if (bad.length)
    throw fail('E_DEPLOY_BAD_NAME', `${dir}: ${bad.length} file name(s) with characters deploy does not send`,
      { notes: bad.map((f) => f.rel), hint: 'rename them to letters, digits and . _ - + @' });
  const files: LocalFile[] = [];
  for (const f of listed) files.push({ rel: f.rel, abs: f.abs, bytes: (await stat(f.abs)).size, sha256: await sha256File(f.abs) });
  // Small files first: the manifest and configs arrive before the big weights.
  files.sort((a, b) => a.bytes - b.bytes || (a.rel < b.rel ? -1 : 1));
  return { dir, kind, manifest: kind === 'bundle' ? BUNDLE_FILE : BRICKS_FILE, modelId, files, bytes: files.reduce((n, f) => n + f.bytes, 0) };
}
