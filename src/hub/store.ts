/**
 * Where pulled files go. Two layouts, one interface:
 *
 * - the Hugging Face cache (default), as `huggingface_hub` and `@huggingface/hub` write it:
 *   `<cache>/models--org--name/{blobs/<etag>, snapshots/<commit>/<path> → ../../blobs/<etag>, refs/<revision>}`
 *   where etag is the LFS sha256 or the git blob id. The cache is `HF_HUB_CACHE`, else
 *   `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
 *   `~/.cache/huggingface/hub`.
 * - a plain folder (`pull -o DIR`): files at `DIR/<path>`, with `huggingface_hub`'s local-dir metadata
 *   (`DIR/.cache/huggingface/download/<path>.metadata`: commit, etag, timestamp) so both tools see the
 *   files as current; unfinished and verified-but-unplaced blobs wait in `.cache/huggingface/download/blobs/`.
 *
 * Downloads land in `blobs/<etag>.incomplete` (kept across runs: the next run resumes it with a Range
 * request) and become `blobs/<etag>` once their hash is checked. Snapshot links / folder files are made
 * only after every selected file is verified, so a failed pull never shows a partial model.
 * The repo listing of each commit is kept (`.nanomind/tree-<commit>.json`) for offline pulls.
 */
import { homedir } from 'node:os';
import { copyFile, link, lstat, mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fail } from '../errors.js';
import { resolveInside } from '../onnx/model-io.js';
import type { RepoFile } from './select.js';

export const etagOf = (f: RepoFile): string => f.lfs?.oid ?? f.oid;

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE
    || join(env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface'), 'hub');
}

/** `org/name` → `models--org--name` (the cache folder of a model repo). */
export const repoFolderName = (repo: string): string => ['models', ...repo.split('/')].join('--');

export interface Store {
  readonly kind: 'cache' | 'dir';
  /** The cache's repo folder, or the -o folder. */
  readonly root: string;
  /** Where the model's files are once pulled (the snapshot folder or the -o folder). */
  modelDir(commit: string): string;
  partialPath(f: RepoFile): string;
  blobPath(f: RepoFile): string;
  /** True when `f` is already in place for `commit` with the right etag and size. */
  isPlaced(commit: string, f: RepoFile): Promise<boolean>;
  /** Puts verified blobs in place (links into the snapshot, or moves into the folder). */
  place(commit: string, files: readonly RepoFile[]): Promise<void>;
  saveRef(revision: string, commit: string): Promise<void>;
  readRef(revision: string): Promise<string | undefined>;
  saveListing(commit: string, listing: readonly RepoFile[]): Promise<void>;
  readListing(commit: string): Promise<RepoFile[] | undefined>;
}

const COMMIT = /^[0-9a-f]{40}$/;
const exists = (p: string) => stat(p).then((s) => s, () => undefined);

async function writeAtomic(file: string, text: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

function metaStore(metaDir: string, refsDir: string) {
  return {
    async saveRef(revision: string, commit: string) {
      if (revision !== commit) await writeAtomic(resolveInside(refsDir, revision, 'revision'), commit);
    },
    async readRef(revision: string) {
      if (COMMIT.test(revision)) return revision;
      const text = await readFile(resolveInside(refsDir, revision, 'revision'), 'utf8').catch(() => undefined);
      return text?.trim() || undefined;
    },
    async saveListing(commit: string, listing: readonly RepoFile[]) {
      await writeAtomic(join(metaDir, `tree-${commit}.json`), JSON.stringify(listing) + '\n');
    },
    async readListing(commit: string) {
      const text = await readFile(join(metaDir, `tree-${commit}.json`), 'utf8').catch(() => undefined);
      try { return text === undefined ? undefined : JSON.parse(text) as RepoFile[]; } catch { return undefined; }
    },
  };
}

/** The Hugging Face cache layout for `repo` under `cacheDir`. */
export function cacheStore(cacheDir: string, repo: string): Store {
  const root = join(cacheDir, repoFolderName(repo));
  const blob = (f: RepoFile) => join(root, 'blobs', etagOf(f));
  const pointer = (commit: string, f: RepoFile) => resolveInside(join(root, 'snapshots', commit), f.path, `repo file '${f.path}'`);
  return {
    kind: 'cache',
    root,
    modelDir: (commit) => join(root, 'snapshots', commit),
    partialPath: (f) => `${blob(f)}.incomplete`,
    blobPath: blob,
    async isPlaced(commit, f) {
      const s = await exists(pointer(commit, f));
      return !!s && s.size === f.size && !!(await exists(blob(f)));
    },
    async place(commit, files) {
      for (const f of files) {
        const p = pointer(commit, f);
        await mkdir(dirname(p), { recursive: true });
        await rm(p, { force: true });
        // Relative links keep the cache valid when it is moved (as huggingface_hub does).
        await symlink(relative(dirname(p), blob(f)), p).catch(() => link(blob(f), p));
      }
    },
    ...metaStore(join(root, '.nanomind'), join(root, 'refs')),
  };
}

/** A plain folder with huggingface_hub's local-dir metadata. */
export function dirStore(out: string): Store {
  const meta = join(out, '.cache', 'huggingface');
  const blob = (f: RepoFile) => join(meta, 'download', 'blobs', etagOf(f));
  const target = (f: RepoFile) => resolveInside(out, f.path, `repo file '${f.path}'`);
  const metadataFile = (f: RepoFile) => resolveInside(join(meta, 'download'), `${f.path}.metadata`, `repo file '${f.path}'`);
  return {
    kind: 'dir',
    root: out,
    modelDir: () => out,
    partialPath: (f) => `${blob(f)}.incomplete`,
    blobPath: blob,
    async isPlaced(_commit, f) {
      const s = await exists(target(f));
      if (!s || s.size !== f.size) return false;
      const lines = (await readFile(metadataFile(f), 'utf8').catch(() => '')).split('\n');
      return lines[1] === etagOf(f);
    },
    async place(commit, files) {
      // Hard links, not renames: two paths of the repo may share one blob (identical content).
      const used = new Set<string>();
      for (const f of files) {
        const t = target(f);
        await mkdir(dirname(t), { recursive: true });
        if (await exists(blob(f))) {
          await rm(t, { force: true });
          await link(blob(f), t).catch(() => copyFile(blob(f), t));
          used.add(blob(f));
        } else if (!(await exists(t))) throw fail('E_PULL_INTERNAL', `verified blob of '${f.path}' disappeared before it was placed`);
        await writeAtomic(metadataFile(f), `${commit}\n${etagOf(f)}\n${Date.now() / 1000}\n`);
      }
      for (const b of used) await rm(b, { force: true });
    },
    ...metaStore(join(meta, 'nanomind'), join(meta, 'nanomind', 'refs')),
  };
}

export async function fileSize(path: string): Promise<number | undefined> {
  return (await lstat(path).catch(() => undefined))?.size;
}
