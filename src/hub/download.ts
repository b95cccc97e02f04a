/**
 * One resumable, verified file download with fetch + Range. @huggingface/hub's downloadFileToCacheDir
 * always starts from byte 0 (it pipes the whole body into `.incomplete`), so the transfer is ours; the
 * library still does listing and metadata.
 *
 * Bytes append to `<blob>.incomplete` as they arrive, so an interrupted download (network cut, Ctrl-C,
 * crash) keeps what it had; the next attempt (a retry here, or the next `pull`) asks for
 * `Range: bytes=<have>-`. A 200 answer to a Range request restarts the file. The finished file must
 * match the hub's size and hash (the LFS sha256, or the git blob id for small files) before it is
 * renamed to `<blob>`; a mismatch deletes it.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import { fail } from '../errors.js';
import { hubError, isNetworkError } from './errors.js';
import { fileSize } from './store.js';

export interface DownloadJob {
  readonly url: string;
  readonly path: string;
  readonly partial: string;
  readonly blob: string;
  readonly size: number;
  /** LFS files: sha256 of the content. */
  readonly sha256?: string;
  /** Other files: git blob id, sha1 of `blob <size>\0<content>`. */
  readonly gitOid?: string;
}

export interface DownloadContext {
  readonly fetch: typeof fetch;
  readonly headers: Record<string, string>;
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly signal?: AbortSignal;
  readonly repo: string;
  readonly revision: string;
  readonly hasToken: boolean;
  /** Called with each chunk's length and the file's bytes on disk so far. */
  readonly onBytes?: (delta: number, have: number) => void;
}

export interface DownloadOutcome {
  /** Bytes received over the network for this file in this run. */
  readonly fetched: number;
  /** Bytes already on disk from an earlier, interrupted run. */
  readonly resumedFrom: number;
}

export async function downloadVerified(job: DownloadJob, ctx: DownloadContext): Promise<DownloadOutcome> {
  await mkdir(dirname(job.partial), { recursive: true });
  let fetched = 0;
  let have = (await fileSize(job.partial)) ?? 0;
  if (have > job.size) { await rm(job.partial); have = 0; }
  if (job.size === 0) await writeFile(job.partial, '');
  const resumedFrom = have;
  for (let failures = 0; have < job.size;) {
    try {
      const before = have;
      await fetchRest(job, ctx, have, (n) => { fetched += n; });
      // A body that ends cleanly but short (no Content-Length) is retried like a cut one.
      const now = (await fileSize(job.partial)) ?? 0;
      if (now < job.size) throw new TypeError(`body ended at byte ${now} of ${job.size} (from ${before})`);
    } catch (e) {
      if (ctx.signal?.aborted) throw fail('E_PULL_ABORTED', `download of ${job.path} interrupted`, { hint: 'run pull again to resume' }, e);
      if (!isNetworkError(e)) throw e;
      if (failures++ >= ctx.retries)
        throw fail('E_PULL_NETWORK', `download of ${job.path} failed: ${(e as Error).message}${(e as Error).cause ? ` (${String((e as { cause: unknown }).cause)})` : ''}`,
          { hint: 'run the same pull again: it resumes from the bytes already on disk' }, e);
      await sleep(ctx.retryDelayMs * 2 ** (failures - 1), undefined, { signal: ctx.signal }).catch(() => undefined);
    }
    have = (await fileSize(job.partial)) ?? 0;
  }
  await verify(job);
  await rename(job.partial, job.blob);
  return { fetched, resumedFrom };
}

/** One request for the bytes after `have`, appended to the partial file. */
async function fetchRest(job: DownloadJob, ctx: DownloadContext, have: number, onWritten: (n: number) => void): Promise<void> {
  // identity: a compressed body would make byte offsets meaningless for Range.
  const headers: Record<string, string> = { ...ctx.headers, 'Accept-Encoding': 'identity' };
  if (have > 0) headers.Range = `bytes=${have}-`;
  const res = await ctx.fetch(job.url, { headers, signal: ctx.signal, redirect: 'follow' });
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    throw hubError({ status: res.status, errorCode: res.headers.get('x-error-code'), url: job.url, message: res.headers.get('x-error-message') ?? undefined },
      { repo: ctx.repo, revision: ctx.revision, hasToken: ctx.hasToken });
  }
  if (res.status === 206) {
    const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== have) {
      // The server answered another range than we asked for: start the file over.
      await res.body?.cancel();
      await rm(job.partial, { force: true });
      throw new TypeError(`${job.url}: unexpected Content-Range '${res.headers.get('content-range')}'`);
    }
  } else if (have > 0) {
    // 200 to a Range request: the server sends the whole file.
    await rm(job.partial, { force: true });
    have = 0;
  }
  if (!res.body) return;
  let written = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      written += chunk.length;
      onWritten(chunk.length);
      ctx.onBytes?.(chunk.length, have + written);
      cb(null, chunk);
    },
  });
  // On a cut the bytes already written stay: the next attempt resumes after them.
  await pipeline(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), count, createWriteStream(job.partial, { flags: 'a' }));
}

async function verify(job: DownloadJob): Promise<void> {
  const size = (await fileSize(job.partial)) ?? 0;
  const h = job.sha256 ? createHash('sha256') : createHash('sha1').update(`blob ${size}\0`);
  for await (const chunk of createReadStream(job.partial)) h.update(chunk as Buffer);
  const got = h.digest('hex');
  const want = job.sha256 ?? job.gitOid;
  if (size !== job.size || got !== want) {
    await rm(job.partial, { force: true });
    throw fail('E_PULL_HASH', `${job.path}: downloaded file does not match the hub's ${job.sha256 ? 'sha256' : 'git blob id'} (got ${size} bytes, ${got.slice(0, 12)}…; expected ${job.size} bytes, ${want?.slice(0, 12)}…)`,
      { hint: 'the corrupt download was deleted; run pull again (a proxy or disk may be altering files if it repeats)' });
  }
}
