/**
 * Calibration and evaluation inputs for every brick of a set, made by running the float chain the way
 * the runtime would (encoders → feature merge into the embeddings → decoder), so a decoder is calibrated
 * on embeddings its embed brick really produces, with image rows where the prompt has placeholders.
 *
 * Inputs come from `--calib DIR` when it holds them — a question set (eval.jsonl: images, questions,
 * WAVs, prepared as the runtime prepares them), or `.npy` files named `<input>.npy` (every sample) or
 * `<input>.<k>.npy` (sample k), e.g. `pixel_values.0.npy`, `input_ids.0.npy` — and are otherwise seeded
 * random: pixel-like tensors U(−1, 1) (the normalized range of SigLIP/CLIP processors), other floats
 * N(0, 1); prompts are the placeholder rows each merge needs followed by built-in questions tokenized
 * with the set's tokenizer.json (random text ids when the set has none). Made-up inputs serve 4-bit
 * weight search and accuracy figures only: quantize refuses static int8 of an encoder without --calib,
 * and an encoder whose inputs only a processor makes (integer grids, masks, symbolic image counts) is
 * left unfed rather than fed noise of an invented shape.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { fail } from '../errors.js';
import { isReplaceRows, type BrickEntry, type BricksManifest, type TensorSpec } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';
import { orderBricks } from '../partition/verify.js';
import { readNpyFile, type NpyArray } from '../run/inputs/npy.js';
import type { TensorLike } from '../run/backend.js';
import { fullPassFeeds } from '../run/generation/full-pass.js';
import { IMAGE_NEWLINE } from '../formats/image-newline.js';
import { packMergeSource, type Packs } from './packed-rows.js';
import { toOrtFeeds } from '../onnx/ort-feeds.js';
import { loadTokenizer } from '../run/inputs/tokenizer.js';
import { mulberry32, normalFrom } from '../util/prng.js';
import { ORT_LOG } from '../onnx/ort-log.js';

export type Feeds = Record<string, ort.Tensor>;

export interface Sample {
  /** Float-chain inputs of each brick, by brick name. */
  readonly feeds: ReadonlyMap<string, Feeds>;
  readonly inputIds?: readonly bigint[];
  /** mRoPE positions of the prompt (from the family processor, with --calib DIR). */
  readonly positions3?: BigInt64Array;
  /** The runtime's packing of its encoder rows (LLaVA-OneVision anyres, with --calib DIR). */
  readonly packs?: Packs;
}

/** Samples, and the encoder bricks that got none (no real input, and none can be made up). */
export interface SampleSet {
  readonly samples: Sample[];
  readonly unfed: readonly { readonly brick: string; readonly why: string }[];
}

export interface SampleOptions {
  readonly count: number;
  readonly seed: number;
  readonly calibDir?: string;
  /** Random text tokens per prompt besides placeholders (default 16). */
  readonly textTokens?: number;
  readonly threads?: number;
}

export const ENCODER_KINDS = new Set(['vision', 'audio', 'projector']);

export function sessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  return { ...ORT_LOG, intraOpNumThreads: threads ?? 2, graphOptimizationLevel: 'all' };
}

/** Concrete sizes for an input's dims: batch 1, past 0, sequence dims `seq`. */
export function concreteDims(spec: TensorSpec, seq: number): number[] {
  return (spec.shape ?? []).map((d, i) => {
    if (typeof d === 'number') return d;
    if (i === 0 || (d && /batch/.test(d))) return 1;
    if (d && /past/.test(d)) return 0;
    if (d && /seq|total|length|tokens/.test(d)) return seq;
    throw fail('E_QUANT_CALIB', `cannot choose a size for dim '${d}' of input '${spec.name}'`, { hint: 'give calibration inputs with --calib DIR (.npy files named after the inputs)' });
  });
}

/** The vocabulary bound for random prompts: below every placeholder id, within the decoder's logits. */
export function textVocab(m: BricksManifest): number {
  const ids = m.connections.filter(isReplaceRows).map((c) => c.merge.placeholderTokenId);
  const logits = m.bricks.find((b) => b.kind === 'decoder')?.outputs.find((x) => x.name === TENSOR.logits)?.shape;
  const vocab = logits && typeof logits[logits.length - 1] === 'number' ? logits[logits.length - 1] as number : 256;
  return ids.length ? Math.min(vocab, ...ids) : vocab;
}

/** Calibration inputs by input name and sample index (`undefined`: make one up). */
export interface CalibSource {
  readonly count: number;
  tensor(spec: TensorSpec, sample: number): Promise<ort.Tensor | undefined>;
  /** The prompt's mRoPE positions (a Qwen2-VL-family processor's rope index). */
  positions3?(sample: number): BigInt64Array | undefined;
  /** How the runtime packs the sample's encoder rows before the merge (LLaVA-OneVision anyres). */
  packs?(sample: number): Packs | undefined;
}

async function npySource(dir: string): Promise<CalibSource> {
  const files = new Map<string, Map<number | 'all', string>>();
  let count = 0;
  for (const f of (await readdir(dir).catch(() => { throw fail('E_QUANT_CALIB', `${dir}: cannot read the calibration directory`); })).sort()) {
    const m = /^(.+?)(?:\.(\d+))?\.npy$/.exec(f);
    if (!m) continue;
    const idx = m[2] === undefined ? 'all' as const : Number(m[2]);
    if (idx !== 'all') count = Math.max(count, idx + 1);
    if (!files.has(m[1])) files.set(m[1], new Map());
    files.get(m[1])!.set(idx, join(dir, f));
  }
  if (!files.size) throw fail('E_QUANT_CALIB', `${dir}: no .npy calibration inputs`, { hint: 'give images / WAVs (+ prompts.txt), a question set (eval.jsonl), or .npy files named <input>.npy or <input>.<k>.npy, e.g. pixel_values.0.npy' });
  return {
    count: Math.max(count, 1),
    async tensor(spec, s) {
      const f = files.get(spec.name);
      const file = f?.get(s) ?? f?.get('all');
      return file ? npyTensor(await readNpyFile(file), spec, file) : undefined;
    },
  };
}

/**
 * `--calib DIR`: a question set (eval.jsonl with images, questions, WAVs; see ../eval) or a plain folder
 * of images / WAVs (+ optional prompts.txt), prepared by the runtime's own pipeline; or .npy files named
 * after the inputs.
 */
async function calibSource(bricksDir: string, dir: string): Promise<CalibSource> {
  const { evalItemsFromQuestions, promptsFromMediaFolder } = await import('./eval-items.js');
  const prompts = (await stat(join(dir, 'eval.jsonl')).catch(() => undefined))?.isFile()
    ? (await evalItemsFromQuestions(bricksDir, dir)).map((i) => i.prompt)
    : await promptsFromMediaFolder(bricksDir, dir, PROMPTS);
  if (!prompts) return npySource(dir);
  const items = prompts.map((prompt) => ({ prompt }));
  return {
    count: items.length,
    async tensor(spec, s) {
      const p = items[s]!.prompt;
      if (spec.name === TENSOR.inputIds) return new ort.Tensor('int64', BigInt64Array.from(p.inputIds), [1, p.inputIds.length]);
      // A typed question feeds no audio: its sample borrows a clip for the audio encoder's statistics
      // (its prompt has no audio rows, so the decoder never sees it).
      return p.media?.[spec.name] ?? items.map((x) => x.prompt.media?.[spec.name]).find((t, k) => t && k >= s)
        ?? items.map((x) => x.prompt.media?.[spec.name]).find((t) => t);
    },
    positions3: (s) => items[s]!.prompt.positions3,
    packs: (s) => items[s]!.prompt.packs,
  };
}

function npyTensor(a: NpyArray, spec: TensorSpec, file: string): ort.Tensor {
  const dims = [...a.shape];
  if (spec.shape && spec.shape.length !== dims.length) throw fail('E_QUANT_CALIB', `${file}: rank ${dims.length}, input '${spec.name}' has rank ${spec.shape.length}`);
  if (spec.dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(a.data as ArrayLike<number | bigint>, (v) => BigInt(v)), dims);
  if (spec.dtype === 'float32') return new ort.Tensor('float32', Float32Array.from(a.data as ArrayLike<number>, Number), dims);
  throw fail('E_QUANT_CALIB', `${file}: input '${spec.name}' of type ${spec.dtype} cannot be read from .npy`);
}

/** Questions a VLM gets: the text of calibration prompts when the brick set ships a tokenizer. */
const PROMPTS = [
  'Describe this image in one sentence.', 'What shape is in the picture?', 'What color is the largest object?',
  'How many objects are there?', 'Is there a circle on the left side?', 'What is in the top right corner?',
  'Name every shape you can see.', 'Which object is the smallest?', 'Are the two squares the same color?',
  'What is the background color?', 'Where is the triangle?', 'Write a short caption for the image.',
];

/** The built-in prompts tokenized with the set's tokenizer.json; ids outside the text vocabulary dropped. */
async function tokenizedPrompts(dir: string, m: BricksManifest, vocab: number, reserved: ReadonlySet<number>): Promise<bigint[][]> {
  if (!m.files.some((f) => f.path === 'tokenizer.json')) return [];
  const tok = await loadTokenizer(dir).catch(() => undefined);
  if (!tok) return [];
  return PROMPTS.map((p) => tok.encode(p, { addSpecialTokens: false }).filter((id) => id < vocab && !reserved.has(id)).map(BigInt))
    .filter((ids) => ids.length > 0);
}

/**
 * Why a made-up input cannot stand in for `spec` (undefined: it can): integer inputs (a processor's
 * grid_thw), masks and symbolic dims (SmolVLM's num_images) only come from the model's own processor.
 */
function cannotMakeUp(spec: TensorSpec): string | undefined {
  if (spec.dtype !== 'float32') return `${spec.dtype} input '${spec.name}'`;
  try { concreteDims(spec, 1); } catch { return `input '${spec.name}' with symbolic dims [${(spec.shape ?? []).join(', ')}]`; }
  return undefined;
}

/** config.json's model_type, which decides decoder conventions (Gemma 3's 1-based positions), as the runtime reads it. */
export async function modelTypeOf(dir: string): Promise<string | undefined> {
  const c = await readFile(join(dir, 'config.json'), 'utf8').then((t) => JSON.parse(t) as { model_type?: unknown }, () => undefined);
  return typeof c?.model_type === 'string' ? c.model_type : undefined;
}

export async function buildSamples(dir: string, m: BricksManifest, o: SampleOptions): Promise<SampleSet> {
  const rand = mulberry32(o.seed);
  const normal = normalFrom(rand);
  const source = o.calibDir ? await calibSource(dir, o.calibDir) : undefined;
  const count = source ? Math.min(source.count, o.count) : o.count;
  const order = orderBricks(m.bricks, m.connections);
  const modelType = await modelTypeOf(dir);
  const values = Array.from({ length: count }, () => new Map<string, ort.Tensor>());
  const feeds = Array.from({ length: count }, () => new Map<string, Feeds>());
  const fromDir = async (spec: TensorSpec, s: number): Promise<ort.Tensor | undefined> => source?.tensor(spec, s);
  const random = (spec: TensorSpec): ort.Tensor => {
    const dims = concreteDims(spec, 1);
    const n = dims.reduce((a, b) => a * b, 1);
    const pixels = spec.name === TENSOR.pixelValues || (dims.length === 4 && dims[1] === 3);
    if (spec.dtype !== 'float32') throw fail('E_QUANT_CALIB', `no calibration data for ${spec.dtype} input '${spec.name}'`, { hint: 'give it with --calib DIR' });
    return new ort.Tensor('float32', Float32Array.from({ length: n }, () => (pixels ? rand() * 2 - 1 : normal())), dims);
  };
  const runBrick = async (b: BrickEntry, feedFor: (s: number) => Promise<Feeds>) => {
    const session = await ort.InferenceSession.create(join(dir, b.file), sessionOptions(o.threads));
    try {
      for (let s = 0; s < count; s++) {
        const f = await feedFor(s);
        feeds[s].set(b.name, f);
        // image_newline too: a family packing (LLaVA-OneVision anyres) reads it beside the features
        const needed = b.outputs.filter((x) => x.name === IMAGE_NEWLINE || m.connections.some((c) => c.from === `${b.name}.${x.name}`)).map((x) => x.name);
        if (!needed.length) continue;
        const out = await session.run(f, needed);
        for (const k of needed) values[s].set(`${b.name}.${k}`, out[k]);
      }
    } finally { await session.release(); }
  };
  const upstream = (b: BrickEntry, i: TensorSpec, s: number) => {
    const c = m.connections.find((x) => x.to === `${b.name}.${i.name}` && !x.merge);
    return c ? values[s].get(c.from) : undefined;
  };

  // An encoder whose inputs neither the calibration source nor a made-up tensor can give (a family
  // processor's grid or mask) is left unfed, with the bricks after it; its prompts then hold no rows for it.
  const unfed: { brick: string; why: string }[] = [];
  for (const b of order.filter((x) => ENCODER_KINDS.has(x.kind))) {
    const fedBy = (i: TensorSpec) => m.connections.find((x) => x.to === `${b.name}.${i.name}` && !x.merge);
    const blocked = b.inputs.map((i) => {
      const c = fedBy(i);
      if (c) return unfed.some((u) => c.from.startsWith(`${u.brick}.`)) ? `its input '${i.name}' comes from an unfed brick` : undefined;
      return source ? undefined : cannotMakeUp(i);
    }).find((w) => w);
    if (blocked) { unfed.push({ brick: b.name, why: blocked }); continue; }
    await runBrick(b, async (s) => Object.fromEntries(await Promise.all(b.inputs.map(async (i) =>
      [i.name, upstream(b, i, s) ?? await fromDir(i, s) ?? random(i)] as const))));
  }

  const merges = m.connections.filter(isReplaceRows);
  for (let s = 0; s < count; s++)
    for (const c of merges) {
      const pack = source?.packs?.(s)?.[c.merge.placeholderTokenId];
      if (pack) await packMergeSource(values[s] as Map<string, TensorLike>, c.from, pack);
    }
  const vocab = textVocab(m);
  const reserved = new Set(merges.map((c) => c.merge.placeholderTokenId));
  const prompts = await tokenizedPrompts(dir, m, vocab, reserved);
  const ids: bigint[][] = [];
  for (let s = 0; s < count; s++) {
    const given = await fromDir({ name: TENSOR.inputIds, dtype: 'int64', shape: ['batch_size', 'sequence_length'] }, s);
    if (given) { ids.push([...(given.data as BigInt64Array)]); continue; }
    const text = (): bigint => { for (;;) { const v = Math.floor(rand() * vocab); if (!reserved.has(v)) return BigInt(v); } };
    const p: bigint[] = prompts.length ? [] : [text(), text()];
    for (const c of merges) {
      const f = values[s].get(c.from);
      const rows = f ? f.dims.slice(0, -1).reduce((a, d) => a * d, 1) : 0;
      for (let r = 0; r < rows; r++) p.push(BigInt(c.merge.placeholderTokenId));
    }
    if (prompts.length) p.push(...prompts[(s + o.seed) % prompts.length]);
    else for (let n = 0; n < (o.textTokens ?? 16) - 2; n++) p.push(text());
    ids.push(p);
  }

  for (const b of order.filter((x) => !ENCODER_KINDS.has(x.kind)))
    await runBrick(b, async (s) => {
      const given = new Map<string, ort.Tensor>();
      for (const i of b.inputs) { const t = await fromDir(i, s); if (t) given.set(i.name, t); }
      const r = fullPassFeeds(b, { ids: ids[s], connections: m.connections, value: (k) => values[s].get(k) as TensorLike | undefined, given: (i) => given.get(i.name) as TensorLike | undefined, positions3: source?.positions3?.(s), modelType });
      if (r.missing.length)
        throw fail('E_QUANT_CALIB', `no calibration value for brick '${b.name}' input '${r.missing[0]}'`, { hint: `give it with --calib DIR as ${r.missing[0]}.npy` });
      return toOrtFeeds(r.feeds);
    });
  return {
    samples: feeds.map((f, s) => {
      const p3 = source?.positions3?.(s), packs = source?.packs?.(s);
      return { feeds: f, inputIds: ids[s], ...(p3 ? { positions3: p3 } : {}), ...(packs ? { packs } : {}) };
    }),
    unfed,
  };
}
