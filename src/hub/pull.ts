/**
 * `nanomind pull`: fetch the files of one dtype variant of an onnx-community repo from the Hugging
 * Face hub into the HF cache (or a folder), resumable and verified.
 *
 * Steps: resolve the revision to a commit (@huggingface/hub `modelInfo`), list the repo at that commit
 * (`listFiles`, recursive), choose the files (select.ts), download what is missing (download.ts, a few
 * at a time), then place all of them at once (store.ts). Offline (`HF_HUB_OFFLINE=1`, or the network
 * fails) the commit comes from `refs/<revision>` and the listing from the copy kept at the last online
 * pull; it succeeds only when every chosen file is already in place.
 */
import { listFiles, modelInfo, HubApiError } from '@huggingface/hub';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fail, isNanomindError, type NanomindError } from '../errors.js';
import { downloadVerified } from './download.js';
import { hubError, isNetworkError, TOKEN_HINT, type HubFailure } from './errors.js';
import { selectFiles, type RepoFile } from './select.js';
import { cacheStore, dirStore, etagOf, fileSize, hubCacheDir, type Store } from './store.js';

export const DEFAULT_HUB_URL = 'https://huggingface.co';

export interface PullOptions {
  /** `org/name` of a model repo. */
  readonly repo: string;
  /** Branch, tag or commit (default `main`). */
  readonly revision?: string;
  /** `fp32` (default) or an onnx-community suffix: fp16, int8, uint8, quantized (or q8), q4, q4f16, bnb4; fallbacks in select.ts. */
  readonly dtype?: string;
  /** Extra files to fetch, as globs over repo paths (`onnx/*_fp16.onnx*`, `**\/*.md`). */
  readonly include?: readonly string[];
  /** Write plain files into this folder instead of the HF cache. */
  readonly out?: string;
  /** The HF cache folder (default: from HF_HUB_CACHE / HF_HOME, else ~/.cache/huggingface/hub). */
  readonly cacheDir?: string;
  /** Default: HF_ENDPOINT, else https://huggingface.co. */
  readonly hubUrl?: string;
  /** Default: HF_TOKEN, HUGGING_FACE_HUB_TOKEN, else the token file in HF_HOME. */
  readonly token?: string;
  /** Default: HF_HUB_OFFLINE. */
  readonly offline?: boolean;
  readonly concurrency?: number;
  /** Re-requests per file after a network failure (each resumes); default 5. */
  readonly retries?: number;
  readonly retryDelayMs?: number;
  readonly signal?: AbortSignal;
  /** Environment to read HF_* variables from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  readonly fetch?: typeof fetch;
  readonly onProgress?: (e: PullProgress) => void;
}

export type PullProgress =
  | { readonly type: 'plan'; readonly files: readonly { path: string; size: number; have: number; cached: boolean }[] }
  | { readonly type: 'bytes'; readonly path: string; readonly have: number; readonly size: number; readonly delta: number }
  | { readonly type: 'done'; readonly path: string; readonly status: PulledFile['status'] };

export interface PulledFile {
  readonly path: string;
  readonly size: number;
  /** Content sha256 (LFS files) or git blob id (small files), as the hub lists them; verified. */
  readonly hash: string;
  readonly status: 'downloaded' | 'resumed' | 'cached';
}

export interface PullResult {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  /** The model folder: the snapshot in the cache, or `out`. */
  readonly dir: string;
  readonly offline: boolean;
  readonly files: readonly PulledFile[];
  /** Bytes received over the network in this run. */
  readonly bytesDownloaded: number;
  readonly variants: Readonly<Record<string, string>>;
  readonly notes: readonly string[];
}

const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]+$/;
const truthy = (v: string | undefined) => !!v && /^(1|true|yes|on)$/i.test(v);

async function findToken(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const t = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (t) return t.trim();
  const file = env.HF_TOKEN_PATH || join(env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface'), 'token');
  return (await readFile(file, 'utf8').catch(() => '')).trim() || undefined;
}

export async function pull(o: PullOptions): Promise<PullResult> {
  if (!REPO_ID.test(o.repo) || o.repo.includes('..'))
    throw fail('E_USAGE', `'${o.repo}' is not a repo id`, { hint: 'expected org/name, e.g. onnx-community/Qwen2.5-0.5B-Instruct' });
  const env = o.env ?? process.env;
  const hubUrl = (o.hubUrl ?? env.HF_ENDPOINT ?? DEFAULT_HUB_URL).replace(/\/+$/, '');
  const token = o.token ?? await findToken(env);
  // @huggingface/hub rejects tokens that are not user access tokens with a bare TypeError.
  if (token && !token.startsWith('hf_'))
    throw fail('E_PULL_AUTH', 'the Hugging Face token does not start with hf_', { hint: TOKEN_HINT });
  const revision = o.revision ?? 'main';
  const store = o.out ? dirStore(o.out) : cacheStore(o.cacheDir ?? hubCacheDir(env), o.repo);
  const ctx = { repo: o.repo, revision, hasToken: !!token };
  const offline = o.offline ?? truthy(env.HF_HUB_OFFLINE);
  if (offline) return fromStore(store, o, revision, o.offline ? '--offline was given' : 'HF_HUB_OFFLINE is set');

  // The library throws HubApiError without the response headers; keep the last failure's X-Error-Code.
  let lastFailure: HubFailure | undefined;
  const baseFetch = o.fetch ?? fetch;
  const hubFetch: typeof fetch = async (input, init) => {
    const res = await baseFetch(input, { ...init, signal: init?.signal ?? o.signal });
    if (!res.ok) lastFailure = { status: res.status, errorCode: res.headers.get('x-error-code'), url: res.url, message: res.headers.get('x-error-message') ?? undefined };
    return res;
  };
  const lib = { hubUrl, accessToken: token, fetch: hubFetch };
  let commit: string;
  let listing: RepoFile[];
  try {
    const info = await modelInfo({ ...lib, name: o.repo, revision, additionalFields: ['sha'] });
    if (!info.sha) throw fail('E_PULL_HTTP', `${hubUrl}: no commit sha for ${o.repo}@${revision}`);
    commit = info.sha;
    listing = [];
    for await (const e of listFiles({ ...lib, repo: { type: 'model', name: o.repo }, revision: commit, recursive: true })) {
      if (e.type === 'file') listing.push({ path: e.path, size: e.size, oid: e.oid ?? '', ...(e.lfs ? { lfs: { oid: e.lfs.oid, size: e.lfs.size } } : {}) });
    }
  } catch (e) {
    if (e instanceof HubApiError) throw hubError({ ...(lastFailure ?? { url: e.url }), status: e.statusCode, url: e.url, message: lastFailure?.message ?? e.message.split('. URL:')[0] }, ctx, e);
    if (o.signal?.aborted) throw fail('E_PULL_ABORTED', `pull of ${o.repo} interrupted`, {}, e);
    if (!isNetworkError(e)) throw e;
    return fromStore(store, o, revision, `the hub at ${hubUrl} is unreachable (${(e as Error).message}${(e as { cause?: Error }).cause ? `: ${(e as { cause: Error }).cause.message}` : ''})`, e);
  }
  await store.saveListing(commit, listing);
  const sel = selectFiles(listing, { dtype: o.dtype, include: o.include });

  const plan = await Promise.all(sel.files.map(async (f) => {
    const placed = await store.isPlaced(commit, f);
    const verified = placed || (await fileSize(store.blobPath(f))) === f.size;
    return { f, cached: verified, have: verified ? f.size : (await fileSize(store.partialPath(f))) ?? 0 };
  }));
  o.onProgress?.({ type: 'plan', files: plan.map((p) => ({ path: p.f.path, size: p.f.size, have: p.have, cached: p.cached })) });

  const status = new Map<string, PulledFile['status']>();
  let bytesDownloaded = 0;
  // One download per blob: two repo paths with identical content share it.
  const queue = [...new Map(plan.filter((p) => !p.cached).map((p) => [etagOf(p.f), p])).values()];
  const sameBlob = (f: RepoFile) => plan.filter((p) => !p.cached && etagOf(p.f) === etagOf(f)).map((p) => p.f.path);
  for (const p of plan) if (p.cached) { status.set(p.f.path, 'cached'); o.onProgress?.({ type: 'done', path: p.f.path, status: 'cached' }); }
  const headers: Record<string, string> = { 'User-Agent': 'nanomind (+@huggingface/hub)', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const worker = async () => {
    for (let p = queue.shift(); p; p = queue.shift()) {
      const { f } = p;
      const out = await downloadVerified({
        url: `${hubUrl}/${o.repo}/resolve/${commit}/${f.path.split('/').map(encodeURIComponent).join('/')}`,
        path: f.path, partial: store.partialPath(f), blob: store.blobPath(f), size: f.size,
        ...(f.lfs ? { sha256: f.lfs.oid } : { gitOid: f.oid }),
      }, {
        fetch: baseFetch, headers, retries: o.retries ?? 5, retryDelayMs: o.retryDelayMs ?? 500, signal: o.signal, ...ctx,
        onBytes: (delta, have) => o.onProgress?.({ type: 'bytes', path: f.path, have, size: f.size, delta }),
      }).catch((e: unknown) => { queue.length = 0; throw e; });   // the others finish their file, start no new one
      bytesDownloaded += out.fetched;
      const s = out.resumedFrom > 0 ? 'resumed' : 'downloaded';
      for (const path of sameBlob(f)) { status.set(path, s); o.onProgress?.({ type: 'done', path, status: s }); }
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(o.concurrency ?? 4, queue.length)) }, worker);
  const settled = await Promise.allSettled(workers);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;

  await store.place(commit, sel.files);
  await store.saveRef(revision, commit);
  return {
    repo: o.repo, revision, commit, dir: store.modelDir(commit), offline: false, bytesDownloaded, variants: sel.variants, notes: sel.notes,
    files: sel.files.map((f) => ({ path: f.path, size: f.size, hash: etagOf(f), status: status.get(f.path) ?? 'cached' })),
  };
}

/** The offline path: everything from the store, nothing from the network. */
async function fromStore(store: Store, o: PullOptions, revision: string, why: string, cause?: unknown): Promise<PullResult> {
  const code = cause ? 'E_PULL_NETWORK' : 'E_PULL_OFFLINE';
  const hint = cause ? 'check the connection (or HF_ENDPOINT / --hub-url) and run again' : 'unset HF_HUB_OFFLINE and pull once with a network connection';
  const commit = await store.readRef(revision);
  if (!commit) throw fail(code, `${why}, and ${o.repo}@${revision} was never pulled into ${store.root}`, { hint }, cause);
  const listing = await store.readListing(commit);
  if (!listing) throw fail(code, `${why}, and no file list of ${o.repo}@${commit.slice(0, 12)} is cached in ${store.root}`, { hint }, cause);
  let sel;
  try {
    sel = selectFiles(listing, { dtype: o.dtype, include: o.include });
  } catch (e) {
    throw isNanomindError(e) ? withNote(e, why) : e;
  }
  const missing: string[] = [];
  for (const f of sel.files) if (!(await store.isPlaced(commit, f))) missing.push(f.path);
  if (missing.length)
    throw fail(code, `${why}, and ${missing.length} file(s) of ${o.repo}@${revision} (${o.dtype ?? 'fp32'}) are not in ${store.root}`, { hint, notes: missing }, cause);
  return {
    repo: o.repo, revision, commit, dir: store.modelDir(commit), offline: true, bytesDownloaded: 0, variants: sel.variants,
    notes: [`offline: ${why}; using the cached files`, ...sel.notes],
    files: sel.files.map((f) => ({ path: f.path, size: f.size, hash: etagOf(f), status: 'cached' as const })),
  };
}

function withNote(e: NanomindError, why: string): NanomindError {
  return fail(e.code, e.message, { ...e.detail, notes: [...(e.detail.notes ?? []), `offline: ${why}`] }, e);
}
