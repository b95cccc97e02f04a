/**
 * Proves a brick set equivalent to the model it came from: ONNX Runtime runs the original graph and
 * the chain of bricks (with the merge bricks.json describes) on the same seeded random inputs, and every
 * output the two share is compared.
 */
import ort from 'onnxruntime-node';
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { BrickEntry, Connection, TensorSpec, VerifyOutput, VerifyReport } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';
import { mulberry32, normalFrom } from '../util/prng.js';
import { ORT_LOG } from '../onnx/ort-log.js';
import type { TensorLike } from '../run/backend.js';
import { tensor } from '../run/feeds.js';
import { fullPassFeeds } from '../run/generation/full-pass.js';
import { toOrtFeeds as toOrt } from '../onnx/ort-feeds.js';

export interface VerifyOptions {
  /** The original model and its inputs/outputs. */
  readonly original: { readonly file: string; readonly inputs: readonly TensorSpec[]; readonly outputs: readonly TensorSpec[] };
  readonly dir: string;
  readonly bricks: readonly BrickEntry[];
  readonly connections: readonly Connection[];
  readonly vocabSize?: number;
  readonly tolerance?: number;
  readonly seed?: number;
  /** Sizes for symbolic dims that are not batch or sequence (e.g. image height). */
  readonly dims?: Readonly<Record<string, number>>;
}

const sessionOptions: ort.InferenceSession.SessionOptions = { ...ORT_LOG, intraOpNumThreads: 2, graphOptimizationLevel: 'all' };

export async function verifyBricks(o: VerifyOptions): Promise<VerifyReport> {
  const tolerance = o.tolerance ?? 1e-4;
  const seed = o.seed ?? 1234;
  const rand = mulberry32(seed);
  const normal = normalFrom(rand);
  // One session at a time, released right after its single run: peak memory is the largest model, not all of them.
  const runOnce = async (file: string, feeds: Record<string, ort.Tensor>) => {
    const s = await ort.InferenceSession.create(file, sessionOptions);
    try { return await s.run(feeds); } finally { await s.release(); }
  };
  const values = new Map<string, ort.Tensor>();
  const merges = o.connections.filter((c) => c.merge);
  const sizeOf = (spec: TensorSpec, seq: number): number[] => (spec.shape ?? []).map((d, i) => {
    if (typeof d === 'number') return d;
    if (d && o.dims?.[d] !== undefined) return o.dims[d];
    if (i === 0 || (d && /batch/.test(d))) return 1;
    if (d && /past/.test(d)) return 0;
    if (d && /seq|total|length/.test(d)) return seq;
    throw fail('E_VERIFY_SHAPE', `cannot choose a size for dim '${d}' of input '${spec.name}' to verify with`, { hint: 'skip the check with --no-verify' });
  });
  const randomFloat = (spec: TensorSpec, seq: number): ort.Tensor => {
    const dims = sizeOf(spec, seq);
    return new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, normal), dims);
  };

  // 1. Encoders first: their feature rows decide how many placeholder tokens the prompt holds.
  const order = orderBricks(o.bricks, o.connections);
  const features = new Map<string, ort.Tensor>();
  for (const b of order.filter((x) => x.kind === 'vision' || x.kind === 'audio' || x.kind === 'projector')) {
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of b.inputs) {
      const from = o.connections.find((c) => c.to === `${b.name}.${i.name}`);
      feeds[i.name] = from ? values.get(from.from)! : (values.get(i.name) ?? randomFloat(i, 1));
      if (!from) values.set(i.name, feeds[i.name]);
    }
    const out = await runOnce(join(o.dir, b.file), feeds);
    for (const [k, v] of Object.entries(out)) { values.set(`${b.name}.${k}`, v); features.set(`${b.name}.${k}`, v); }
  }

  // 2. The prompt: placeholders for every merged feature row, random text ids around them.
  const placeholders = merges.map((c) => ({ id: c.merge!.placeholderTokenId, rows: rowsOf(values.get(c.from)!) }));
  const reserved = new Set(placeholders.map((p) => p.id));
  const vocab = o.vocabSize ?? 256;
  const textId = (): bigint => { for (;;) { const v = Math.floor(rand() * vocab); if (!reserved.has(v)) return BigInt(v); } };
  const ids: bigint[] = [textId(), textId()];
  for (const p of placeholders) { for (let i = 0; i < p.rows; i++) ids.push(BigInt(p.id)); ids.push(textId()); }
  while (ids.length < 12) ids.push(textId());
  const seq = ids.length;

  // 3. Text-side bricks, merging features where the manifest says so.
  let decoderFeeds: Record<string, TensorLike> = {};
  for (const b of order.filter((x) => x.kind === 'embed' || x.kind === 'decoder')) {
    const { feeds, missing } = fullPassFeeds(b, { ids, connections: o.connections, value: (k) => values.get(k) as TensorLike | undefined });
    if (missing.length) throw fail('E_VERIFY_INPUT', `no value to feed brick '${b.name}' input '${missing[0]}'`);
    if (b.kind === 'decoder') decoderFeeds = feeds;
    const out = await runOnce(join(o.dir, b.file), toOrt(feeds));
    for (const [k, v] of Object.entries(out)) values.set(`${b.name}.${k}`, v);
  }

  // 4. The original on the same inputs.
  // The original takes the encoders' inputs and the prompt as the decoder saw it (ids, mask, positions, empty cache).
  const prompt: Record<string, TensorLike> = { ...decoderFeeds, [TENSOR.inputIds]: tensor('int64', BigInt64Array.from(ids), [1, ids.length]) };
  const originalFeeds: Record<string, ort.Tensor> = {};
  for (const i of o.original.inputs) {
    const v = values.get(i.name) ?? prompt[i.name];
    if (v) originalFeeds[i.name] = v instanceof ort.Tensor ? v : toOrt({ [i.name]: v as TensorLike })[i.name]!;
    else if (/^past_key_values/.test(i.name)) originalFeeds[i.name] = new ort.Tensor('float32', new Float32Array(0), sizeOf(i, ids.length));
    else throw fail('E_VERIFY_INPUT', `no value to feed the original model's input '${i.name}'`);
  }
  const ref = await runOnce(o.original.file, originalFeeds);
  const outputs: VerifyOutput[] = [];
  for (const out of o.original.outputs) {
    const producer = o.bricks.find((b) => b.outputs.some((x) => x.name === out.name) && !o.connections.some((c) => c.from === `${b.name}.${out.name}`))
      ?? o.bricks.find((b) => b.outputs.some((x) => x.name === out.name));
    const got = producer && values.get(`${producer.name}.${out.name}`);
    if (!got) continue;
    outputs.push({ name: out.name, ...compare(got, ref[out.name]) });
  }
  if (!outputs.length) throw fail('E_VERIFY_INPUT', 'the brick chain produces none of the original outputs');
  const maxAbsDiff = Math.max(...outputs.map((x) => x.maxAbsDiff));
  const maxRelDiff = Math.max(...outputs.map((x) => x.maxRelDiff));
  return { ok: maxRelDiff <= tolerance, maxAbsDiff, maxRelDiff, tolerance, seed, outputs };
}

const rowsOf = (t: ort.Tensor): number => t.dims.slice(0, -1).reduce((a, b) => a * b, 1);

/** Max abs difference, and the same relative to the reference's largest magnitude (robust near zero). */
export function compare(got: ort.Tensor, ref: ort.Tensor): { maxAbsDiff: number; maxRelDiff: number } {
  if (got.dims.join() !== ref.dims.join())
    return { maxAbsDiff: Infinity, maxRelDiff: Infinity };
  const a = got.data as ArrayLike<number>;
  const b = ref.data as ArrayLike<number>;
  let maxAbs = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(Number(a[i]) - Number(b[i]));
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
    scale = Math.max(scale, Math.abs(Number(b[i])));
  }
  return { maxAbsDiff: maxAbs, maxRelDiff: maxAbs / Math.max(scale, 1e-12) };
}

/** Bricks in dependency order (producers before consumers), following the manifest's connections. */
export function orderBricks(bricks: readonly BrickEntry[], connections: readonly Connection[]): BrickEntry[] {
  const done = new Set<string>();
  const out: BrickEntry[] = [];
  while (out.length < bricks.length) {
    const next = bricks.find((b) => !done.has(b.name) && connections
      .filter((c) => c.to.startsWith(`${b.name}.`)).every((c) => done.has(c.from.slice(0, c.from.indexOf('.')))));
    if (!next) throw fail('E_BRICKS_INVALID', 'brick connections form a cycle');
    done.add(next.name);
    out.push(next);
  }
  return out;
}
