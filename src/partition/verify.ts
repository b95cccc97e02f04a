/**
 * Proves a brick set equivalent to the model it came from: ONNX Runtime runs the original graph and
 * the chain of bricks (with the merge bricks.json describes) on the same seeded random inputs, and every
 * output the two share is compared.
 */
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { isReplaceRows, type BrickEntry, type Connection, type TensorSpec, type VerifyOutput, type VerifyReport } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';
import { mulberry32, normalFrom } from '../util/prng.js';
import { ORT_LOG } from '../onnx/ort-log.js';
import { toOrtFeeds } from '../onnx/ort-feeds.js';
import type { TensorLike } from '../run/backend.js';
import { fullPassFeeds } from '../run/generation/full-pass.js';

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

/** Suffix of the outputs compared on the second, one-token step that reads the KV cache of the first. */
export const CACHED_STEP = ' (next token, cached)';
/** Elements of one random verification input at most (1 GiB of float32). */
export const MAX_VERIFY_ELEMENTS = 2 ** 28;

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
  const merges = o.connections.filter(isReplaceRows);
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
    const n = dims.reduce((a, b) => a * b, 1);
    // A declared shape no real input has (a hostile or broken export) must not become a RangeError or an OOM.
    if (n > MAX_VERIFY_ELEMENTS)
      throw fail('E_VERIFY_SHAPE', `input '${spec.name}' of shape [${dims.join(', ')}] has ${n} elements, over the ${MAX_VERIFY_ELEMENTS} nanomind verifies with`,
        { hint: 'check the input shapes the model declares (nanomind inspect), or skip the check with --no-verify' });
    return new ort.Tensor('float32', Float32Array.from({ length: n }, normal), dims);
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
  const placeholders = merges.map((c) => ({ id: c.merge.placeholderTokenId, rows: rowsOf(values.get(c.from)!) }));
  const reserved = new Set(placeholders.map((p) => p.id));
  const vocab = o.vocabSize ?? 256;
  const textId = (): bigint => { for (;;) { const v = Math.floor(rand() * vocab); if (!reserved.has(v)) return BigInt(v); } };
  const ids: bigint[] = [textId(), textId()];
  for (const p of placeholders) { for (let i = 0; i < p.rows; i++) ids.push(BigInt(p.id)); ids.push(textId()); }
  while (ids.length < 12) ids.push(textId());
  const seq = ids.length;
  const producerOf = (name: string) => o.bricks.find((b) => b.outputs.some((x) => x.name === name) && !o.connections.some((c) => c.from === `${b.name}.${name}`))
    ?? o.bricks.find((b) => b.outputs.some((x) => x.name === name));

  // Step 1 is the prompt with an empty cache. When the chain's decoder keeps a KV cache, step 2 is one
  // more token on top of the chain's own cache, checked against the original fed its own cache, or, for an
  // original without one, recomputing the whole sequence (its last row). A past input wired to the wrong
  // layer, or a rewritten attention (--add-kv-cache), cannot show in step 1, where every past is empty.
  const presentOf = (past: string) => past.replace(/^past_key_values/, 'present');
  const isPast = (name: string) => /^past_key_values/.test(name);
  const decoder = o.bricks.find((b) => b.kind === 'decoder');
  const chainPast = decoder?.inputs.filter((i) => isPast(i.name)) ?? [];
  const chainCached = chainPast.length > 0 && chainPast.every((i) => decoder!.outputs.some((x) => x.name === presentOf(i.name)));
  const originalPast = o.original.inputs.filter((i) => isPast(i.name));
  const originalCached = originalPast.length > 0 && originalPast.every((i) => o.original.outputs.some((x) => x.name === presentOf(i.name)));
  const recompute = originalPast.length === 0 && o.original.inputs.some((i) => i.name === TENSOR.inputIds);
  const next = [textId()];
  const textInputs = (tokens: readonly bigint[], total: number, first: number) => new Map([
    [TENSOR.inputIds, new ort.Tensor('int64', BigInt64Array.from(tokens), [1, tokens.length])],
    [TENSOR.attentionMask, new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total])],
    [TENSOR.positionIds, new ort.Tensor('int64', BigInt64Array.from(tokens, (_, i) => BigInt(first + i)), [1, tokens.length])],
  ]);
  const steps: Step[] = [{ ids, values: textInputs(ids, seq, 0), past: () => undefined, originalPast: () => undefined, lastRow: false }];
  if (chainCached && (originalCached || recompute)) steps.push({
    ids: next, values: textInputs(next, seq + 1, seq),
    past: (name) => steps[0].values.get(`${decoder!.name}.${presentOf(name)}`),
    originalPast: (name) => steps[0].ref?.[presentOf(name)],
    ...(originalCached ? { lastRow: false } : { originalValues: textInputs([...ids, ...next], seq + 1, 0), lastRow: true }),
  });
  const valueOf = (st: Step, key: string) => st.values.get(key) ?? values.get(key);
  const emptyPast = (i: TensorSpec) => new ort.Tensor('float32', new Float32Array(0), sizeOf(i, seq));
  // Each model is opened once and runs every step before it is released (session creation dominates).
  const runSteps = async (file: string, feedsOf: (st: Step, k: number) => Record<string, ort.Tensor>, keep: (st: Step, out: Record<string, ort.Tensor>) => void) => {
    const s = await ort.InferenceSession.create(file, sessionOptions);
    try { for (const [k, st] of steps.entries()) keep(st, await s.run(feedsOf(st, k))); } finally { await s.release(); }
  };

  // 3. Text-side bricks, merging features where the manifest says so (the prompt holds the placeholders;
  // the next token does not), fed as the runtime's reference passes are (run/generation/full-pass.ts).
  for (const b of order.filter((x) => x.kind === 'embed' || x.kind === 'decoder')) {
    await runSteps(join(o.dir, b.file), (st, k) => {
      const r = fullPassFeeds(b, {
        ids: st.ids, start: k === 0 ? 0 : seq, connections: o.connections,
        value: (key) => valueOf(st, key) as TensorLike | undefined, past: (name) => st.past(name) as TensorLike | undefined,
      });
      if (r.missing.length) throw fail('E_VERIFY_INPUT', `no value to feed brick '${b.name}' input '${r.missing[0]}'`);
      return toOrtFeeds(r.feeds);
    }, (st, out) => { for (const [k, v] of Object.entries(out)) st.values.set(`${b.name}.${k}`, v); });
  }

  // 4. The original on the same inputs.
  await runSteps(o.original.file, (st) => {
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of o.original.inputs) {
      const v = isPast(i.name) ? st.originalPast(i.name) ?? emptyPast(i) : st.originalValues?.get(i.name) ?? valueOf(st, i.name);
      if (!v) throw fail('E_VERIFY_INPUT', `no value to feed the original model's input '${i.name}'`);
      feeds[i.name] = v;
    }
    return feeds;
  }, (st, out) => { st.ref = out; });
  const outputs: VerifyOutput[] = [];
  steps.forEach((st, k) => {
    for (const out of o.original.outputs) {
      const p = producerOf(out.name);
      const got = p && valueOf(st, `${p.name}.${out.name}`);
      const ref = st.ref![out.name];
      if (got && ref) outputs.push({ name: k === 0 ? out.name : `${out.name}${CACHED_STEP}`, ...compare(got, st.lastRow ? lastRowOf(ref) : ref) });
    }
  });
  if (!outputs.length) throw fail('E_VERIFY_INPUT', 'the brick chain produces none of the original outputs');
  const maxAbsDiff = Math.max(...outputs.map((x) => x.maxAbsDiff));
  const maxRelDiff = Math.max(...outputs.map((x) => x.maxRelDiff));
  return { ok: maxRelDiff <= tolerance, maxAbsDiff, maxRelDiff, tolerance, seed, outputs };
}

interface Step {
  readonly ids: readonly bigint[];
  /** This step's inputs and brick outputs (`brick.output`); encoder features are shared by all steps. */
  readonly values: Map<string, ort.Tensor>;
  readonly past: (name: string) => ort.Tensor | undefined;
  readonly originalPast: (name: string) => ort.Tensor | undefined;
  /** The original's text inputs when they differ from the chain's (the whole sequence, to recompute). */
  readonly originalValues?: Map<string, ort.Tensor>;
  /** Compare the chain with the last sequence row of the original's outputs. */
  readonly lastRow: boolean;
  ref?: Record<string, ort.Tensor>;
}

/** Row `dims[1] - 1` of a `[batch, sequence, ...]` tensor (batch 1), as `[1, 1, ...]`. */
function lastRowOf(t: ort.Tensor): ort.Tensor {
  const row = t.dims.slice(2).reduce((a, b) => a * b, 1);
  const data = t.data as Float32Array;
  return new ort.Tensor(t.type as 'float32', data.slice(data.length - row), [t.dims[0], 1, ...t.dims.slice(2)]);
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
