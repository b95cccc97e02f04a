/**
 * `pull` against a real HTTP hub on 127.0.0.1 (test/hub/hub-server.ts) serving a tiny LLaVA repo in the
 * onnx-community layout plus a fake `_q4f16` decoder (another seed's fp32 decoder; its 3 MiB `.onnx_data`
 * is random bytes: only the transfer is under test). No request leaves the loopback interface: every call passes the fake hub's
 * URL, a temp cache, and an env without HF_* variables from the machine.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { scanCacheDir } from '@huggingface/hub';
import { Command } from 'commander';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pullVerb } from '../../src/cli/pull.js';
import { isNanomindError, type NanomindError } from '../../src/errors.js';
import { buildTinyLlava } from '../../src/fixtures/index.js';
import { pull, type PullOptions } from '../../src/hub/index.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { FakeHub, gitBlobOid } from './hub-server.js';

const REPO = 'onnx-community/tiny-llava';
const PRIVATE = 'acme/private-llava';
const Q4_DATA = 'onnx/decoder_model_merged_q4f16.onnx_data';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let work: string;
let hub: FakeHub;
let files: Map<string, Buffer>;
let commit: string;
let cache: string;
let n = 0;

async function walk(dir: string, base = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...await walk(p, base)); else out.push(relative(base, p));
  }
  return out.sort();
}

async function caught(p: Promise<unknown>): Promise<NanomindError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (!isNanomindError(e)) throw new Error(`expected a NanomindError, got ${String(e)}`);
  return e;
}

// HF_HOME points at an empty folder so no token file of this machine is read.
const opts = (o: Partial<PullOptions> = {}): PullOptions => ({ repo: REPO, hubUrl: hub.url, cacheDir: cache, env: { HF_HOME: join(work, 'hf-home') }, retryDelayMs: 5, ...o, ...(o.env ? { env: { HF_HOME: join(work, 'hf-home'), ...o.env } } : {}) });
const snapshot = () => join(cache, 'models--onnx-community--tiny-llava', 'snapshots', commit);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-pull-'));
  const src = join(work, 'src');
  await buildTinyLlava(src, { externalThreshold: 1024 });
  files = new Map();
  for (const p of await walk(src)) files.set(p, await readFile(join(src, p)));
  // The fake q4f16 variant exists only for the decoder; fp16 and README must not be fetched.
  const other = await buildTinyLlava(join(work, 'seed1'), { seed: 1 });
  files.set('onnx/decoder_model_merged_q4f16.onnx', await readFile(other.files.decoder));
  files.set(Q4_DATA, randomBytes(3 << 20));
  files.set('onnx/decoder_model_merged_fp16.onnx', randomBytes(4096));
  files.set('README.md', Buffer.from('# tiny llava\n'));
  files.set('extra/config-copy.json', files.get('config.json')!);   // same blob as config.json
  files.set('.gitattributes', Buffer.from('*.onnx filter=lfs diff=lfs merge=lfs -text\n'));
  hub = new FakeHub();
  commit = hub.addRepo({ id: REPO, files }).commit;
  hub.addRepo({ id: PRIVATE, files: new Map([['config.json', files.get('config.json')!], ['onnx/model.onnx', files.get('onnx/embed_tokens.onnx')!]]), private: true });
  await hub.start();
});

afterAll(async () => { await hub.stop(); await rm(work, { recursive: true, force: true }); });

beforeEach(() => {
  cache = join(work, `cache-${n++}`);
  hub.requests.length = 0;
  hub.bytesSent.clear();
});

describe('pull from a loopback hub', () => {
  it('fetches the fp32 files into the HF cache layout, verified, and reuses them next time', async () => {
    const r = await pull(opts());
    const fp32 = [...files.keys()].filter((p) => !/q4f16|fp16|README|gitattributes|extra/.test(p)).sort();
    expect(r.files.map((f) => f.path)).toEqual(fp32);
    expect(fp32).toContain('onnx/decoder_model_merged.onnx_data');
    expect(r.commit).toBe(commit);
    expect(r.dir).toBe(snapshot());
    expect(r.files.every((f) => f.status === 'downloaded')).toBe(true);
    expect(r.bytesDownloaded).toBe(fp32.reduce((s, p) => s + files.get(p)!.length, 0));
    // Byte-identical files behind relative links to blobs named by sha256 (LFS) or git blob id.
    for (const p of fp32) {
      expect((await readFile(join(r.dir, p))).equals(files.get(p)!)).toBe(true);
      const target = await readlink(join(r.dir, p));
      const etag = p.endsWith('.json') ? gitBlobOid(files.get(p)!) : sha256(files.get(p)!);
      expect(join(r.dir, p, '..', target)).toBe(join(cache, 'models--onnx-community--tiny-llava', 'blobs', etag));
    }
    expect((await readFile(join(cache, 'models--onnx-community--tiny-llava', 'refs', 'main'), 'utf8')).trim()).toBe(commit);
    // @huggingface/hub's own cache scanner reads the layout back (it lists top-level files only).
    const scan = await scanCacheDir(cache);
    expect(scan.warnings).toEqual([]);
    expect(scan.repos.map((x) => x.id)).toEqual([{ name: REPO, type: 'model' }]);
    expect(scan.repos[0].revisions.map((x) => ({ commit: x.commitOid, refs: x.refs, files: x.files.length })))
      .toEqual([{ commit, refs: ['main'], files: fp32.filter((p) => !p.includes('/')).length }]);
    for (const x of scan.repos[0].revisions[0].files) expect(x.blob.path.startsWith(join(cache, 'models--onnx-community--tiny-llava', 'blobs'))).toBe(true);
    expect(hub.requests.some((q) => /q4f16|fp16|README|extra/.test(q.url))).toBe(false);
    // The pulled folder is a model `inspect` reads as three bricks.
    const report = await inspectModel(r.dir);
    expect(report.bricks.map((b) => b.kind).sort()).toEqual(['decoder', 'embed', 'vision']);

    hub.requests.length = 0;
    const again = await pull(opts());
    expect(again.bytesDownloaded).toBe(0);
    expect(again.files.every((f) => f.status === 'cached')).toBe(true);
    expect(hub.requests.filter((q) => q.url.includes('/resolve/'))).toEqual([]);
  });

  it('--dtype q4f16 takes the variant where it exists and fp32 elsewhere; -o writes a plain folder', async () => {
    const out = join(work, 'out-q4');
    const r = await pull(opts({ dtype: 'q4f16', out, include: ['README.md', 'extra/**'] }));
    expect(r.variants).toEqual({ 'onnx/decoder_model_merged': 'q4f16', 'onnx/embed_tokens': 'fp32', 'onnx/vision_encoder': 'fp32' });
    const onnx = r.files.map((f) => f.path).filter((p) => p.startsWith('onnx/'));
    expect(onnx).toEqual(['onnx/decoder_model_merged_q4f16.onnx', Q4_DATA, 'onnx/embed_tokens.onnx', 'onnx/embed_tokens.onnx_data',
      'onnx/vision_encoder.onnx', 'onnx/vision_encoder.onnx_data']);
    expect(r.dir).toBe(out);
    for (const f of r.files) {
      expect((await lstat(join(out, f.path))).isFile()).toBe(true);
      expect((await readFile(join(out, f.path))).equals(files.get(f.path)!)).toBe(true);
      const meta = (await readFile(join(out, '.cache', 'huggingface', 'download', `${f.path}.metadata`), 'utf8')).split('\n');
      expect(meta.slice(0, 2)).toEqual([commit, f.hash]);
    }
    expect(r.files.some((f) => f.path === 'README.md')).toBe(true);
    expect(r.files.find((f) => f.path === 'extra/config-copy.json')?.hash).toBe(r.files.find((f) => f.path === 'config.json')?.hash);
    expect(await readdir(join(out, '.cache', 'huggingface', 'download', 'blobs')).catch(() => [])).toEqual([]);
    expect(await pull(opts({ dtype: 'bnb4' })).catch((e: NanomindError) => e.code)).toBe('E_PULL_DTYPE');
  });

  it('resumes an interrupted download with a Range request and fetches only the rest', async () => {
    hub.cutOnce.add(Q4_DATA);
    const e = await caught(pull(opts({ dtype: 'q4f16', retries: 0, concurrency: 1 })));
    expect(e.code).toBe('E_PULL_NETWORK');
    const size = files.get(Q4_DATA)!.length;
    const partial = join(cache, 'models--onnx-community--tiny-llava', 'blobs', `${sha256(files.get(Q4_DATA)!)}.incomplete`);
    const have = (await stat(partial)).size;
    expect(have).toBeGreaterThan(0);
    expect(have).toBeLessThan(size);
    expect(await walk(join(cache, 'models--onnx-community--tiny-llava', 'snapshots'))).toEqual([]);
    const firstRun = [...hub.bytesSent.keys()].filter((p) => p !== Q4_DATA);

    hub.requests.length = 0;
    hub.bytesSent.clear();
    const r = await pull(opts({ dtype: 'q4f16', concurrency: 1 }));
    const ranged = hub.requests.filter((q) => q.range && q.url.includes('/resolve/'));
    expect(ranged.map((q) => q.range)).toEqual([`bytes=${have}-`]);
    expect(hub.bytesSent.get(Q4_DATA)).toBe(size - have);
    expect(r.files.find((f) => f.path === Q4_DATA)?.status).toBe('resumed');
    expect((await readFile(join(r.dir, Q4_DATA))).equals(files.get(Q4_DATA)!)).toBe(true);
    // Files finished in the first run are not fetched again.
    expect(r.files.filter((f) => f.status === "cached").map((f) => f.path)).toEqual(firstRun.sort());
    expect(firstRun.length).toBeGreaterThan(0);
  });

  it('retries a cut transfer within one run by resuming it', async () => {
    hub.cutOnce.add(Q4_DATA);
    const r = await pull(opts({ dtype: 'q4f16' }));
    const size = files.get(Q4_DATA)!.length;
    const ranged = hub.requests.filter((q) => q.range && q.url.includes('/resolve/'));
    expect(ranged.length).toBe(1);
    const from = Number(/bytes=(\d+)-/.exec(ranged[0].range!)![1]);
    expect(from).toBeGreaterThan(0);
    expect(hub.bytesSent.get(Q4_DATA)).toBe((size >> 1) + size - from);   // half, then from what reached the disk
    expect((await readFile(join(r.dir, Q4_DATA))).equals(files.get(Q4_DATA)!)).toBe(true);
  });

  it('rejects a file whose bytes do not match the hub hash and leaves no snapshot', async () => {
    hub.corrupt.add('onnx/embed_tokens.onnx_data');
    try {
      const e = await caught(pull(opts()));
      expect(e.code).toBe('E_PULL_HASH');
    } finally {
      hub.corrupt.clear();
    }
    const root = join(cache, 'models--onnx-community--tiny-llava');
    expect(await walk(join(root, 'snapshots'))).toEqual([]);
    const blobs = await readdir(join(root, 'blobs'));
    const bad = sha256(files.get('onnx/embed_tokens.onnx_data')!);
    expect(blobs.filter((b) => b.startsWith(bad))).toEqual([]);
    // A clean second run completes.
    expect((await pull(opts())).files.length).toBeGreaterThan(0);
  });

  it('missing repo → E_PULL_NOT_FOUND; private repo → E_PULL_AUTH with an HF_TOKEN hint, then works with HF_TOKEN', async () => {
    expect((await caught(pull(opts({ repo: 'onnx-community/nope' })))).code).toBe('E_PULL_NOT_FOUND');
    expect((await caught(pull(opts({ revision: 'v9' })))).code).toBe('E_PULL_NOT_FOUND');
    const e = await caught(pull(opts({ repo: PRIVATE })));
    expect(e.code).toBe('E_PULL_AUTH');
    expect(e.detail.hint).toMatch(/HF_TOKEN/);
    expect((await caught(pull(opts({ repo: PRIVATE, env: { HF_TOKEN: 'hf_wrong' } })))).code).toBe('E_PULL_AUTH');
    // The token file `hf auth login` writes ($HF_HOME/token) works as well as HF_TOKEN.
    const home = join(work, 'logged-in');
    await mkdir(home, { recursive: true });
    await writeFile(join(home, 'token'), `${hub.token}\n`);
    expect((await pull(opts({ repo: PRIVATE, env: { HF_HOME: home } }))).files.length).toBe(2);
    const r = await pull(opts({ repo: PRIVATE, env: { HF_TOKEN: hub.token } }));
    expect(r.files.map((f) => f.path)).toEqual(['config.json', 'onnx/model.onnx']);
    expect(hub.requests.filter((q) => q.url.includes('/resolve/')).every((q) => q.auth === `Bearer ${hub.token}`)).toBe(true);
  });

  it('works offline from a complete cache (HF_HUB_OFFLINE or an unreachable hub) and says what is missing otherwise', async () => {
    await pull(opts());
    hub.requests.length = 0;
    const off = await pull(opts({ env: { HF_HUB_OFFLINE: '1' } }));
    expect(off.offline).toBe(true);
    expect(off.dir).toBe(snapshot());
    expect(hub.requests).toEqual([]);
    expect((await caught(pull(opts({ env: { HF_HUB_OFFLINE: '1' }, dtype: 'q4f16' })))).code).toBe('E_PULL_OFFLINE');

    const closed = 'http://127.0.0.1:9';   // discard port: connection refused
    const down = await pull(opts({ hubUrl: closed }));
    expect(down.offline).toBe(true);
    expect(down.notes[0]).toMatch(/unreachable/);
    expect((await caught(pull(opts({ hubUrl: closed, cacheDir: join(work, 'empty-cache') })))).code).toBe('E_PULL_NETWORK');
  });

  it('honours HF_HUB_CACHE and HF_ENDPOINT from the environment', async () => {
    const r = await pull({ repo: PRIVATE, env: { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url, HF_TOKEN: hub.token, HF_HOME: join(work, 'hf-home') }, retryDelayMs: 5 });
    expect(r.dir.startsWith(join(cache, 'models--acme--private-llava', 'snapshots'))).toBe(true);
  });

  it('the CLI verb prints the JSON result', async () => {
    const program = new Command().exitOverride();
    pullVerb(program);
    const chunks: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => { chunks.push(s); return true; }) as typeof process.stdout.write;
    const saved = process.env.HF_HUB_CACHE;
    try {
      process.env.HF_HUB_CACHE = cache;
      await program.parseAsync(['node', 'nanomind', 'pull', REPO, '--hub-url', hub.url, '--dtype', 'q4f16', '--json']);
    } finally {
      process.stdout.write = write;
      if (saved === undefined) delete process.env.HF_HUB_CACHE; else process.env.HF_HUB_CACHE = saved;
    }
    const out = JSON.parse(chunks.join(''));
    expect(out).toMatchObject({ repo: REPO, commit, offline: false, variants: { 'onnx/decoder_model_merged': 'q4f16' } });
    expect(out.files.find((f: { path: string }) => f.path === Q4_DATA)).toMatchObject({ size: 3 << 20, status: 'downloaded' });
  });
});
