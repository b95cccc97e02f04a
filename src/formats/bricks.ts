/**
 * `bricks.json`: the manifest of a brick set (partition output, quantize output). This module is its
 * only reader and writer; the runtime reads it too, so it imports nothing from the compiler stages.
 *
 * Format `nanomind.bricks`, version 1:
 * - `model`: `{id, layout: 'monolithic'|'split', source}`; `sources`: input files with sha256.
 * - `bricks[]`: `{name, kind, file, dataFiles[], sha256, inputs[], outputs[], params, bytes, nodes, flops?}`;
 *   tensors are `{name, dtype, shape}` with numeric or symbolic dims (null = unknown).
 * - `connections[]`: `{from: 'brick.tensor', to: 'brick.tensor', merge?, cross?}`. A `merge` says how the source
 *   rows enter the target embedding sequence: `{mode: 'replace-rows', placeholderTokenId}` — they replace the
 *   placeholder-token rows, in order (as transformers.js does); `{mode: 'prepend'}` — they go in front of the
 *   token rows, the attention mask growing by as many ones (Florence-2's image features before its task
 *   prompt, into the text encoder's inputs_embeds).
 *   A `cross` (encoder-decoder models such as Whisper) says the target attends to the source: the encoder
 *   runs once per input and its output is fed to every decoder step (`{mode: 'cross-attention'}`).
 * - `files[]`: tokenizer/config files copied beside the bricks, with sha256.
 * - `verify`: the equivalence check partition ran (or null when skipped); for a model with a KV cache its
 *   `outputs[]` also hold `<name> (next token, cached)`: one more token on top of the prompt's cache.
 * - a decoder brick with a KV cache may say how the runtime keeps it, `kvCache`: 'shared-buffer' (its
 *   attention is com.microsoft GroupQueryAttention reading the past inputs and writing the present outputs
 *   directly, so one buffer per pair, longer than the cache, serves as both; see partition/kv-share.ts) or 'concat' (the
 *   present outputs are new tensors one token longer each step). Absent means 'concat' (files written before).
 * - quantize adds optional `format`, `accelerator`, `quantization`, `accuracy` per brick and a top-level
 *   `quantization` (see `formats/quantized.ts`); readers that do not know them ignore them.
 * Version history: 1 — first version (`cross` connections and the decoder's `kvCache` added later, both
 * optional: older readers ignore them, and this reader takes a missing `kvCache` as 'concat'; the `prepend`
 * merge mode and the `encoder` brick kind added later: older readers refuse such a set).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { resolveInside, sha256File } from '../util/files.js';
import { deepFreeze, readJsonFile, writeJsonAtomic } from './json-file.js';
import { BRICK_KINDS, type BrickKind } from './names.js';

export const BRICKS_FILE = 'bricks.json';
export const BRICKS_FORMAT = 'nanomind.bricks';
export const BRICKS_VERSION = 1;

export type DimSpec = number | string | null;
export interface TensorSpec { readonly name: string; readonly dtype: string; readonly shape: readonly DimSpec[] | null }

/** How a decoder's KV cache is kept between steps (see the header). */
export type KvCacheMode = 'shared-buffer' | 'concat';
export const KV_CACHE_MODES: readonly KvCacheMode[] = ['shared-buffer', 'concat'];

export interface BrickEntry {
  readonly name: string;
  readonly kind: BrickKind;
  readonly file: string;
  readonly dataFiles: readonly string[];
  readonly sha256: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly params: number;
  readonly bytes: number;
  readonly nodes: number;
  /** Estimated FLOPs per unit (`image`, `audio clip`, `token`); an estimate from weight shapes. */
  readonly flops?: { readonly per: string; readonly value: number };
  /** Weight format; 'fp32' when absent (quantize writes fp16, w8a8, w8a16-gN, w4a16-gN). */
  readonly format?: string;
  /** The accelerator class the format was chosen for (quantize). */
  readonly accelerator?: 'npu' | 'gpu' | 'cpu';
  /** Decoders with a KV cache: how the runtime may keep it; absent = 'concat'. */
  readonly kvCache?: KvCacheMode;
}

export interface ReplaceRowsMerge {
  readonly placeholderTokenId: number;
  /** Source rows replace placeholder rows in order; their counts must match. */
  readonly mode: 'replace-rows';
}

export interface PrependMerge {
  /** Source rows go before the target's token rows; the attention mask gets as many ones in front. */
  readonly mode: 'prepend';
}

export type MergeSpec = ReplaceRowsMerge | PrependMerge;

/** The placeholder merges (the decoder-only VLM convention); prepend merges are the encoder-decoder runtime's. */
export const isReplaceRows = (c: Connection): c is Connection & { readonly merge: ReplaceRowsMerge } => c.merge?.mode === 'replace-rows';

export interface CrossAttentionSpec {
  /** The target brick reads the whole source tensor at every step (encoder states for cross-attention). */
  readonly mode: 'cross-attention';
}

export interface Connection { readonly from: string; readonly to: string; readonly merge?: MergeSpec; readonly cross?: CrossAttentionSpec }
export interface FileEntry { readonly path: string; readonly sha256: string; readonly bytes: number }

export interface VerifyOutput { readonly name: string; readonly maxAbsDiff: number; readonly maxRelDiff: number }
export interface VerifyReport {
  readonly ok: boolean;
  readonly maxAbsDiff: number;
  readonly maxRelDiff: number;
  readonly tolerance: number;
  readonly seed: number;
  readonly outputs: readonly VerifyOutput[];
}

export interface BricksManifest {
  readonly format: typeof BRICKS_FORMAT;
  readonly version: number;
  readonly model: { readonly id: string; readonly layout: 'monolithic' | 'split'; readonly source: string };
  readonly sources: readonly FileEntry[];
  readonly bricks: readonly BrickEntry[];
  readonly connections: readonly Connection[];
  readonly files: readonly FileEntry[];
  readonly verify: VerifyReport | null;
  readonly createdBy: string;
}

export async function writeBricksManifest(dir: string, m: BricksManifest): Promise<void> {
  await writeJsonAtomic(join(dir, BRICKS_FILE), m);
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Reads and checks `bricks.json`, reporting every problem at once; optionally checks sizes and hashes. */
export async function readBricksManifest(dir: string, opts: { checkHashes?: boolean } = {}): Promise<BricksManifest> {
  const file = join(dir, BRICKS_FILE);
  const raw = await readJsonFile(file, 'E_BRICKS_INVALID') as Record<string, unknown>;
  const issues: string[] = [];
  if (!raw || typeof raw !== 'object') throw fail('E_BRICKS_INVALID', `${file}: not a JSON object`, { file });
  if (raw.format !== BRICKS_FORMAT) issues.push(`format: expected '${BRICKS_FORMAT}', got ${JSON.stringify(raw.format)}`);
  if (typeof raw.version !== 'number') issues.push('version: expected a number');
  else if (raw.version > BRICKS_VERSION)
    throw fail('E_BRICKS_VERSION', `${file}: format v${raw.version} is newer than this nanomind (≤ v${BRICKS_VERSION})`,
      { file, hint: 'upgrade nanomind or partition the model again' });
  const bricks = Array.isArray(raw.bricks) ? raw.bricks as Record<string, unknown>[] : (issues.push('bricks: expected an array'), []);
  const names = new Set<string>();
  bricks.forEach((b, i) => {
    const at = `bricks[${i}]`;
    if (typeof b.name !== 'string' || !b.name) issues.push(`${at}.name: expected a string`);
    else if (names.has(b.name)) issues.push(`${at}.name: duplicate brick '${b.name}'`);
    else names.add(b.name);
    if (!BRICK_KINDS.includes(b.kind as BrickKind)) issues.push(`${at}.kind: expected one of ${BRICK_KINDS.join(', ')}`);
    if (typeof b.file !== 'string') issues.push(`${at}.file: expected a string`);
    if (typeof b.sha256 !== 'string' || !HEX64.test(b.sha256)) issues.push(`${at}.sha256: expected 64 hex chars`);
    if (!Array.isArray(b.dataFiles)) issues.push(`${at}.dataFiles: expected an array`);
    if (b.kvCache !== undefined) {
      if (!KV_CACHE_MODES.includes(b.kvCache as KvCacheMode)) issues.push(`${at}.kvCache: expected one of ${KV_CACHE_MODES.join(', ')}`);
      else if (b.kind !== 'decoder') issues.push(`${at}.kvCache: only a decoder brick keeps a KV cache`);
    }
    for (const key of ['inputs', 'outputs'] as const) {
      if (!Array.isArray(b[key])) { issues.push(`${at}.${key}: expected an array`); continue; }
      (b[key] as Record<string, unknown>[]).forEach((t, j) => {
        if (typeof t?.name !== 'string' || typeof t?.dtype !== 'string') issues.push(`${at}.${key}[${j}]: expected {name, dtype, shape}`);
        else if (t.shape !== null && !(Array.isArray(t.shape) && t.shape.every((d) => d === null || typeof d === 'number' || typeof d === 'string')))
          issues.push(`${at}.${key}[${j}].shape: expected an array of numbers, names or null`);
      });
    }
  });
  const conns = Array.isArray(raw.connections) ? raw.connections as Record<string, unknown>[] : (issues.push('connections: expected an array'), []);
  const endpoint = (s: unknown, at: string, dir: 'outputs' | 'inputs') => {
    if (typeof s !== 'string' || !s.includes('.')) { issues.push(`${at}: expected 'brick.tensor'`); return; }
    const dot = s.indexOf('.');
    const b = bricks.find((x) => x.name === s.slice(0, dot));
    if (!b) issues.push(`${at}: no brick '${s.slice(0, dot)}'`);
    else if (Array.isArray(b[dir]) && !(b[dir] as TensorSpec[]).some((t) => t.name === s.slice(dot + 1)))
      issues.push(`${at}: brick '${b.name}' has no ${dir === 'outputs' ? 'output' : 'input'} '${s.slice(dot + 1)}'`);
  };
  conns.forEach((c, i) => {
    endpoint(c.from, `connections[${i}].from`, 'outputs');
    endpoint(c.to, `connections[${i}].to`, 'inputs');
    if (c.cross !== undefined && (c.cross as Record<string, unknown> | null)?.mode !== 'cross-attention')
      issues.push(`connections[${i}].cross.mode: expected 'cross-attention'`);
    if (c.merge !== undefined) {
      const mg = c.merge as Record<string, unknown> | null;
      if (mg?.mode === 'replace-rows') { if (!Number.isInteger(mg.placeholderTokenId)) issues.push(`connections[${i}].merge.placeholderTokenId: expected an integer`); }
      else if (mg?.mode !== 'prepend') issues.push(`connections[${i}].merge.mode: expected 'replace-rows' or 'prepend'`);
    }
    if (c.cross !== undefined && c.merge !== undefined) issues.push(`connections[${i}]: a connection is either a merge or a cross-attention, not both`);
  });
  if (!Array.isArray(raw.files)) issues.push('files: expected an array');
  if (issues.length) throw fail('E_BRICKS_INVALID', `${file}: ${issues.length} problem(s): ${issues[0]}`, { file, notes: issues });

  const m = raw as unknown as BricksManifest;
  await checkFiles(dir, [
    ...m.bricks.map((b) => ({ path: b.file, sha256: b.sha256, what: `brick '${b.name}'` })),
    ...m.bricks.flatMap((b) => b.dataFiles.map((d) => ({ path: d, what: `brick '${b.name}' data` }))),
    ...m.files.map((f) => ({ path: f.path, sha256: f.sha256, what: 'file' })),
  ], opts.checkHashes ?? true);
  return deepFreeze(m);
}

async function checkFiles(dir: string, files: readonly { path: string; sha256?: string; what: string }[], hashes: boolean): Promise<void> {
  for (const f of files) {
    const full = resolveInside(dir, f.path, `${f.what} '${f.path}'`);
    try {
      await stat(full);
    } catch {
      throw fail('E_BRICKS_MISSING_FILE', `${join(dir, BRICKS_FILE)}: ${f.what} file '${f.path}' is missing`, { file: full });
    }
    if (hashes && f.sha256 && (await sha256File(full)) !== f.sha256)
      throw fail('E_BRICKS_HASH', `${f.what} file '${f.path}' does not match its sha256 in ${BRICKS_FILE}`,
        { file: full, hint: 'the file was changed after partitioning; partition again or restore it' });
  }
}
