/**
 * `pull --dtype X` on the file lists of the repos users pull (test/hub/listings/*.json, reconstructed from
 * public hub pages; each file's `source` says what was seen and what is inferred). The selection is
 * checked for every dtype each repo ships (95 pairs); every listing is also served by the loopback hub
 * (test/hub/hub-server.ts) and pulled at its first and last dtype (27 pulls, kept few so the file runs
 * in seconds), with small deterministic stand-in bytes — only the choice of files is under test —
 * except config.json, which carries the listing's config.
 *
 * Oracle for the graph files: transformers.js 4.3.1's ModelRegistry.get_model_files, given the pulled
 * config.json and a per-session dtype map: the files transformers.js would load, every external-data
 * chunk its config names included. transformers.js has no fallback of its own (a missing variant is a
 * failed load), so the map applies the fallback table written below, the rule select.ts documents.
 * Oracle for the shared files: the root files of the listing named in SHARED, which must include what
 * transformers.js itself reads (config, generation config, tokenizer, preprocessor).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { env as tjsEnv, ModelRegistry } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNanomindError } from '../../src/errors.js';
import { codeOf } from '../error-codes.js';
import { pull, selectFiles, type RepoFile } from '../../src/hub/index.js';
import { FakeHub } from './hub-server.js';

interface Listing {
  readonly repo: string;
  readonly source: { readonly seen: readonly string[]; readonly inferred: string };
  readonly config: Record<string, unknown>;
  readonly files: readonly { path: string; size: number }[];
}

const DIR = join(import.meta.dirname, 'listings');
const DTYPES = ['fp32', 'fp16', 'int8', 'uint8', 'quantized', 'q4', 'q4f16', 'bnb4'] as const;
type Dtype = (typeof DTYPES)[number];
/** The fallback rule under test: activation precision first, then the full-precision file. */
const FALLBACK: Record<Dtype, readonly Dtype[]> = {
  fp32: [], fp16: ['fp32'], q4f16: ['fp16', 'fp32'], q4: ['fp32'], bnb4: ['fp32'], int8: ['fp32'], uint8: ['fp32'], quantized: ['fp32'],
};
/** transformers.js's names for the same suffixes (`_quantized` is its q8). */
const TJS: Record<Dtype, string> = { fp32: 'fp32', fp16: 'fp16', int8: 'int8', uint8: 'uint8', quantized: 'q8', q4: 'q4', q4f16: 'q4f16', bnb4: 'bnb4' };
/** Root files a model folder needs beside the graphs. */
const SHARED = ['config.json', 'generation_config.json', 'preprocessor_config.json', 'processor_config.json', 'video_preprocessor_config.json',
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt', 'tokenizer.model',
  'chat_template.jinja', 'chat_template.json'];

const suffix = (d: Dtype) => (d === 'fp32' ? '' : `_${d}`);
const has = (l: Listing, path: string) => l.files.some((f) => f.path === path);
/** The dtypes whose suffix appears on some onnx/*.onnx file. */
const shipped = (l: Listing): Dtype[] => DTYPES.filter((d) => l.files.some((f) => {
  const m = /^onnx\/(.+)\.onnx$/.exec(f.path);
  return m && (d === 'fp32' ? !DTYPES.some((x) => x !== 'fp32' && m[1].endsWith(`_${x}`)) : m[1].endsWith(`_${d}`));
}));
const asRepoFiles = (l: Listing): RepoFile[] => l.files.map((f) => ({ path: f.path, size: f.size, oid: '0'.repeat(40) }));

// Deterministic stand-in bytes: 16 to 79 bytes per file, from the path.
function standIn(path: string): Buffer {
  let h = 2166136261;
  for (const c of path) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return Buffer.from(Array.from({ length: 16 + (h % 64) }, (_, i) => (h >>> (i % 24)) & 0xff));
}

/** Session key per graph base name: the key transformers.js's dtype map uses (Whisper's encoder is `model`). */
async function sessionKeys(repo: string, config: Record<string, unknown>): Promise<Map<string, string>> {
  const bases = (await ModelRegistry.get_model_files(repo, { config: config as never, dtype: 'fp32' }))
    .filter((p) => p.endsWith('.onnx')).map((p) => p.slice('onnx/'.length, -'.onnx'.length));
  const keys = new Map<string, string>();
  for (const b of bases) {
    const probe = await ModelRegistry.get_model_files(repo, { config: config as never, dtype: { [b]: 'q4' } as never });
    keys.set(b, probe.includes(`onnx/${b}_q4.onnx`) ? b : 'model');
  }
  return keys;
}

/** The graph files transformers.js loads for `dtype` with the fallback map, and the dtype each graph got. */
async function oracle(l: Listing, config: Record<string, unknown>, dtype: Dtype): Promise<{ onnx: string[]; variants: Record<string, string> }> {
  const map: Record<string, string> = {};
  const variants: Record<string, string> = {};
  for (const [base, key] of await sessionKeys(l.repo, config)) {
    const got = [dtype, ...FALLBACK[dtype]].find((d) => has(l, `onnx/${base}${suffix(d)}.onnx`));
    if (!got) throw new Error(`${l.repo}: onnx/${base} has no ${dtype} file nor a fallback`);
    map[key] = TJS[got];
    variants[`onnx/${base}`] = got;
  }
  const files = await ModelRegistry.get_model_files(l.repo, { config: config as never, dtype: map as never });
  return { onnx: files.filter((p) => p.startsWith('onnx/')).sort(), variants };
}

const listings: Listing[] = [];
let hub: FakeHub;
let work: string;

beforeAll(async () => {
  tjsEnv.allowRemoteModels = false;   // the oracle reads only the config it is given
  for (const name of (await readdir(DIR)).filter((n) => n.endsWith('.json')).sort())
    listings.push(JSON.parse(await readFile(join(DIR, name), 'utf8')) as Listing);
  hub = new FakeHub();
  hub.pageSize = 1000;
  for (const l of listings)
    hub.addRepo({ id: l.repo, files: new Map(l.files.map((f) => [f.path, f.path === 'config.json' ? Buffer.from(JSON.stringify(l.config)) : standIn(f.path)])) });
  await hub.start();
  work = await mkdtemp(join(tmpdir(), 'nanomind-real-listings-'));
});

afterAll(async () => { await hub?.stop(); if (work) await rm(work, { recursive: true, force: true }); });

async function walk(dir: string, base = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.name === '.cache') continue;   // pull's own download metadata
    if (e.isDirectory()) out.push(...await walk(p, base)); else out.push(relative(base, p));
  }
  return out.sort();
}

describe('real repo listings', () => {
  it('each listing says where it comes from, and its config names exactly the external-data parts it lists', () => {
    expect(listings.length).toBe(14);
    for (const l of listings) {
      expect(l.source.seen.length, l.repo).toBeGreaterThan(0);
      expect(l.source.inferred.length, l.repo).toBeGreaterThan(0);
      const parts: Record<string, number> = {};
      for (const f of l.files) { const m = /^onnx\/(.+\.onnx)_data(?:_\d+)?$/.exec(f.path); if (m) parts[m[1]] = (parts[m[1]] ?? 0) + 1; }
      const named = (l.config['transformers.js_config'] as { use_external_data_format?: Record<string, number> } | undefined)?.use_external_data_format ?? {};
      expect(named, l.repo).toEqual(parts);
      for (const [graph, n] of Object.entries(parts))   // parts are numbered without gaps: _data, _data_1, …, _data_{n-1}
        for (let i = 0; i < n; i++) expect(has(l, `onnx/${graph}_data${i ? `_${i}` : ''}`), `${l.repo} ${graph} part ${i}`).toBe(true);
    }
  });

  it('for every dtype each repo ships, the selection is the files transformers.js loads plus the shared files, nothing else', async () => {
    let checked = 0;
    for (const l of listings) {
      const dtypes = shipped(l);
      expect(dtypes.length, l.repo).toBeGreaterThan(0);
      for (const dtype of dtypes) {
        const want = await oracle(l, l.config, dtype);
        const s = selectFiles(asRepoFiles(l), { dtype });
        expect(s.files.map((f) => f.path), `${l.repo} --dtype ${dtype}`).toEqual([...want.onnx, ...SHARED.filter((p) => has(l, p))].sort());
        expect(s.variants, `${l.repo} --dtype ${dtype}`).toEqual(want.variants);
        checked++;
      }
      // What transformers.js itself reads besides the graphs is among the shared files.
      for (const p of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json']) if (has(l, p)) expect(SHARED).toContain(p);
    }
    expect(checked).toBe(95);
  });

  it('pull from the loopback hub writes exactly those files and requests nothing else (each repo, first and last dtype it ships)', async () => {
    // One sequence of pulls per repo, the repos side by side; each pull's hub requests are told apart by repo and time.
    const pullSome = async (l: Listing): Promise<number> => {
      const dtypes = [...new Set([shipped(l)[0], shipped(l).at(-1)!])];
      for (const dtype of dtypes) {
        const out = join(work, `${l.repo.replace('/', '--')}-${dtype}`);
        const first = hub.requests.length;
        const r = await pull({ repo: l.repo, dtype, out, hubUrl: hub.url, env: { HF_HOME: join(work, 'hf-home') }, retryDelayMs: 5 });
        const resolved = hub.requests.slice(first).filter((q) => q.url.startsWith(`/${l.repo}/resolve/`))
          .map((q) => decodeURIComponent(q.url.slice(`/${l.repo}/resolve/`.length).split('/').slice(1).join('/')));
        // The oracle reads the config.json pull wrote, not the fixture.
        const want = await oracle(l, JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>, dtype);
        const expected = [...want.onnx, ...SHARED.filter((p) => has(l, p))].sort();
        const where = `${l.repo} --dtype ${dtype}`;
        expect(await walk(out), where).toEqual(expected);
        expect(r.files.map((f) => f.path).sort(), where).toEqual(expected);
        expect(r.variants, where).toEqual(want.variants);
        expect(resolved.sort(), where).toEqual(expected);
        for (const p of expected) expect((await readFile(join(out, p))).equals(p === 'config.json' ? Buffer.from(JSON.stringify(l.config)) : standIn(p)), `${where}: ${p}`).toBe(true);
      }
      return dtypes.length;
    };
    const pulls = (await Promise.all(listings.map(pullSome))).reduce((a, b) => a + b, 0);
    expect(pulls).toBe(27);
  }, 60_000);

  it('every .onnx_data part of a split graph comes along (gemma-3: 8 parts for fp32, 4 for fp16, 2 for q4)', () => {
    const gemma = listings.find((l) => l.repo === 'onnx-community/gemma-3-4b-it-ONNX')!;
    const parts = (dtype: string) => selectFiles(asRepoFiles(gemma), { dtype }).files.map((f) => f.path).filter((p) => p.startsWith('onnx/decoder_model_merged'));
    expect(parts('fp32')).toEqual(['onnx/decoder_model_merged.onnx', 'onnx/decoder_model_merged.onnx_data',
      ...[1, 2, 3, 4, 5, 6, 7].map((i) => `onnx/decoder_model_merged.onnx_data_${i}`)]);
    expect(parts('fp16')).toEqual(['onnx/decoder_model_merged_fp16.onnx', 'onnx/decoder_model_merged_fp16.onnx_data',
      'onnx/decoder_model_merged_fp16.onnx_data_1', 'onnx/decoder_model_merged_fp16.onnx_data_2', 'onnx/decoder_model_merged_fp16.onnx_data_3']);
    expect(parts('q4')).toEqual(['onnx/decoder_model_merged_q4.onnx', 'onnx/decoder_model_merged_q4.onnx_data', 'onnx/decoder_model_merged_q4.onnx_data_1']);
  });

  it('Whisper: encoder_model and decoder_model_merged, never decoder_model / decoder_with_past_model', () => {
    const whisper = listings.find((l) => l.repo === 'onnx-community/whisper-tiny')!;
    const s = selectFiles(asRepoFiles(whisper), { dtype: 'q4' });
    expect(s.files.map((f) => f.path).filter((p) => p.startsWith('onnx/'))).toEqual(['onnx/decoder_model_merged_q4.onnx', 'onnx/encoder_model_q4.onnx']);
    expect(s.files.map((f) => f.path).filter((p) => !p.startsWith('onnx/'))).toEqual(['added_tokens.json', 'config.json', 'generation_config.json',
      'merges.txt', 'preprocessor_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']);
    // The revision before "Generate decoder_model_merged_fp16.onnx": an fp16 user gets the fp32 merged decoder,
    // not the un-merged decoder_model_fp16 pair.
    const before = asRepoFiles(whisper).filter((f) => f.path !== 'onnx/decoder_model_merged_fp16.onnx');
    const b = selectFiles(before, { dtype: 'fp16' });
    expect(b.variants).toEqual({ 'onnx/encoder_model': 'fp16', 'onnx/decoder_model_merged': 'fp32' });
    expect(b.files.map((f) => f.path).filter((p) => p.startsWith('onnx/'))).toEqual(['onnx/decoder_model_merged.onnx', 'onnx/encoder_model_fp16.onnx']);
  });

  it('fallback: q4f16 takes fp16 before fp32; q4 takes fp32; a graph with no usable file is E_PULL_DTYPE', () => {
    const smol = asRepoFiles(listings.find((l) => l.repo === 'HuggingFaceTB/SmolVLM-256M-Instruct')!);
    // embed_tokens without its q4f16 / q4 files (a modified copy of the real listing).
    const noEmbed4 = smol.filter((f) => !/embed_tokens_q4(f16)?\.onnx$/.test(f.path));
    expect(selectFiles(noEmbed4, { dtype: 'q4f16' }).variants['onnx/embed_tokens']).toBe('fp16');
    expect(selectFiles(noEmbed4, { dtype: 'q4' }).variants['onnx/embed_tokens']).toBe('fp32');
    // HuggingFaceTB/SmolVLM-Instruct at c530c62 listed embed_tokens_{bnb4,fp16,int8,…} but no embed_tokens.onnx.
    const noFp32Embed = smol.filter((f) => f.path !== 'onnx/embed_tokens.onnx');
    expect(codeOf(() => selectFiles(noFp32Embed))).toBe('E_PULL_DTYPE');
    expect(codeOf(() => selectFiles(noFp32Embed.filter((f) => f.path !== 'onnx/embed_tokens_q4.onnx'), { dtype: 'q4' }))).toBe('E_PULL_DTYPE');
    expect(selectFiles(noFp32Embed, { dtype: 'q4f16' }).variants['onnx/embed_tokens']).toBe('q4f16');
  });

  it('a dtype the repo does not ship is one E_PULL_DTYPE, from select and from pull; q8 is transformers.js\'s name for quantized', async () => {
    const byRepo = (id: string) => listings.find((l) => l.repo === id)!;
    expect(codeOf(() => selectFiles(asRepoFiles(byRepo('HuggingFaceTB/SmolLM2-135M-Instruct')), { dtype: 'int8' }))).toBe('E_PULL_DTYPE');
    expect(codeOf(() => selectFiles(asRepoFiles(byRepo('onnx-community/Phi-3.5-mini-instruct-onnx-web'))))).toBe('E_PULL_DTYPE');
    const e = await pull({ repo: 'onnx-community/gemma-3-4b-it-ONNX', dtype: 'bnb4', out: join(work, 'gemma-bnb4'), hubUrl: hub.url,
      env: { HF_HOME: join(work, 'hf-home') } }).then(() => undefined, (x: unknown) => x);
    expect(isNanomindError(e) && e.code).toBe('E_PULL_DTYPE');
    expect(isNanomindError(e) && e.detail.notes?.length).toBe(3);   // one line per graph: what it ships
    const qwen = asRepoFiles(byRepo('onnx-community/Qwen2.5-0.5B-Instruct'));
    expect(selectFiles(qwen, { dtype: 'q8' }).files).toEqual(selectFiles(qwen, { dtype: 'quantized' }).files);
    expect(codeOf(() => selectFiles(qwen, { dtype: 'q2' }))).toBe('E_USAGE');
  });
});
