/**
 * End-to-end accuracy of a quantized brick set: greedy generation with the float and the quantized
 * set on the same prompts, compared token by token, and exact match against reference answers when an
 * eval set is given.
 *
 * Generation goes through a `GreedyGenerator` callback: `runtimeGreedy` (the default, the included
 * runtime with KV cache) or `ortGreedyNoCache` — a plain ONNX Runtime loop that re-runs embed → merge →
 * decoder over the whole sequence each step with an empty cache (slow, but obviously correct and
 * independent of the runtime), which the tests use as the reference.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { fail } from '../errors.js';
import { isReplaceRows, type BricksManifest } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';
import { orderBricks } from '../partition/verify.js';
import type { TensorLike } from '../run/backend.js';
import { openBrickSet } from '../run/brick-set.js';
import { generate } from '../run/generation/chat-session.js';
import { readNpyFile } from '../run/inputs/npy.js';
import { fullPassFeeds } from '../run/generation/full-pass.js';
import { tensor, toFloat32 } from '../run/feeds.js';
import { toOrtFeeds } from '../onnx/ort-feeds.js';
import { packMergeSource, type Packs } from './packed-rows.js';
import { ENCODER_KINDS, modelTypeOf, sessionOptions, type Feeds } from './samples.js';

export interface Prompt {
  readonly inputIds: readonly bigint[];
  /** Inputs of the encoder bricks that are not fed by another brick (e.g. `pixel_values`), by input name. */
  readonly media?: Readonly<Record<string, ort.Tensor>>;
  /** mRoPE positions of the prompt (Qwen2-VL family rope index; 3 rows of inputIds.length). */
  readonly positions3?: BigInt64Array;
  /** How the runtime packs an encoder's rows before the merge (LLaVA-OneVision anyres), by placeholder id. */
  readonly packs?: Packs;
}

/** Greedy token ids generated after each prompt (exactly `maxNewTokens` each; no stop tokens). */
export type GreedyGenerator = (dir: string, manifest: BricksManifest, prompts: readonly Prompt[], maxNewTokens: number) => Promise<number[][]>;

/**
 * The default: the included runtime (KV cache, arena prefill), so the figures are what `nanomind run`
 * produces. Checked in test/quantize against `ortGreedyNoCache`, the independent reference.
 */
export const runtimeGreedy: GreedyGenerator = async (dir, _m, prompts, maxNew) => {
  const set = await openBrickSet(dir);
  try {
    const out: number[][] = [];
    for (const p of prompts) {
      const features: Record<number, Float32Array> = {};
      for (const e of set.encoders) {
        // a family encoder takes several inputs (pixel_values + grid_thw, pixel_attention_mask): feed them all
        const names = e.chain[0]!.inputs.map((i) => i.name);
        const x = names.length > 1 ? Object.fromEntries(names.filter((n) => p.media?.[n]).map((n) => [n, p.media![n] as unknown as TensorLike])) : p.media?.[e.input.name] as unknown as TensorLike | undefined;
        // an input the prompt has no rows for (a calibration sample's borrowed clip) is not merged
        if (x && p.media?.[e.input.name] && p.inputIds.includes(BigInt(e.placeholderTokenId))) {
          const r = await set.encode(e.placeholderTokenId, x);
          const pack = p.packs?.[e.placeholderTokenId];
          features[e.placeholderTokenId] = pack ? await pack(r) : r.features;
        }
      }
      const r = await generate(set, { inputIds: p.inputIds.map(Number), features, mropePositions: p.positions3 }, { maxNewTokens: maxNew, stopTokenIds: [] });
      out.push([...r.tokens]);
    }
    return out;
  } finally {
    await set.close();
  }
};

function argmaxLast(logits: ort.Tensor): number {
  const V = logits.dims[logits.dims.length - 1];
  const row = toFloat32(tensor(logits.type, (logits.data as Float32Array).subarray(logits.data.length - V), [V]), 'logits');
  let best = 0;
  for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

export const ortGreedyNoCache: GreedyGenerator = async (dir, m, prompts, maxNew) => {
  const order = orderBricks(m.bricks, m.connections);
  const sessions = new Map<string, ort.InferenceSession>();
  for (const b of order) sessions.set(b.name, await ort.InferenceSession.create(join(dir, b.file), sessionOptions()));
  const decoder = order.find((b) => b.kind === 'decoder');
  if (!decoder) throw fail('E_QUANT_E2E', 'the brick set has no decoder to generate with');
  const modelType = await modelTypeOf(dir);
  try {
    const results: number[][] = [];
    for (const p of prompts) {
      const values = new Map<string, ort.Tensor>();
      for (const b of order.filter((x) => ENCODER_KINDS.has(x.kind))) {
        const feeds: Feeds = {};
        for (const i of b.inputs) {
          const c = m.connections.find((x) => x.to === `${b.name}.${i.name}`);
          const t = c ? values.get(c.from) : p.media?.[i.name];
          if (t) feeds[i.name] = t;
        }
        // An encoder the prompt gives no input to (a typed question to an image + audio model) stays idle;
        // the merge below fails if the prompt nevertheless holds its placeholders.
        if (!Object.keys(feeds).length) continue;
        const missing = b.inputs.find((i) => !feeds[i.name]);
        if (missing) throw fail('E_QUANT_E2E', `prompt has no '${missing.name}' for brick '${b.name}'`);
        const out = await sessions.get(b.name)!.run(feeds);
        for (const [k, v] of Object.entries(out)) values.set(`${b.name}.${k}`, v);
      }
      for (const c of m.connections.filter(isReplaceRows)) {
        const pack = p.packs?.[c.merge.placeholderTokenId];
        if (pack) await packMergeSource(values as Map<string, TensorLike>, c.from, pack);
      }
      const ids = [...p.inputIds];
      const gen: number[] = [];
      for (let step = 0; step < maxNew; step++) {
        // Only prompt positions hold placeholders: a generated token that happens to be one is text.
        const mergeIds = [...p.inputIds, ...gen.map(() => -1n)];
        const step_ = new Map<string, ort.Tensor>(values);
        for (const b of order.filter((x) => !ENCODER_KINDS.has(x.kind))) {
          for (const c of m.connections.filter(isReplaceRows).filter((x) => x.to.startsWith(`${b.name}.`)))
            if (p.inputIds.includes(BigInt(c.merge.placeholderTokenId)) && !step_.get(c.from))
              throw fail('E_QUANT_E2E', `the prompt has placeholders for '${c.from}' but no input for its encoder`);
          const r = fullPassFeeds(b, { ids, mergeIds, connections: m.connections, value: (k) => step_.get(k) as TensorLike | undefined, positions3: p.positions3, modelType });
          if (r.missing.length) throw fail('E_QUANT_E2E', `no value for brick '${b.name}' input '${r.missing[0]}'`);
          const feeds: Feeds = toOrtFeeds(r.feeds);
          const fetch = b === decoder ? [TENSOR.logits] : b.outputs.map((o) => o.name);
          const out = await sessions.get(b.name)!.run(feeds, fetch);
          for (const [k, v] of Object.entries(out)) step_.set(`${b.name}.${k}`, v);
        }
        const next = argmaxLast(step_.get(`${decoder.name}.${TENSOR.logits}`)!);
        gen.push(next);
        ids.push(BigInt(next));
      }
      results.push(gen);
    }
    return results;
  } finally {
    for (const s of sessions.values()) await s.release();
  }
};

export interface EvalItem { readonly prompt: Prompt; readonly answer: readonly number[] }

export interface EndToEnd {
  /** Fraction of generated positions where the quantized set's greedy token equals the float set's. */
  readonly tokenAgreement: number;
  /** Fraction of generated tokens before the first disagreement (stricter: later tokens see different context). */
  readonly prefixAgreement: number;
  /** Exact match of the answer tokens on the eval set (null without one). */
  readonly accuracy: number | null;
  /** Token agreement on the eval set's prompts over each answer's length, stop token included (null
   *  without a set): for a trained model, the telling one. */
  readonly evalTokenAgreement: number | null;
  readonly floatAccuracy: number | null;
  readonly prompts: number;
  readonly newTokens: number;
}

export function agreement(ref: readonly number[][], got: readonly number[][]): { tokenAgreement: number; prefixAgreement: number } {
  let same = 0, prefix = 0, total = 0;
  ref.forEach((r, i) => {
    const g = got[i];
    let lead = true;
    r.forEach((t, j) => { if (g[j] === t) { same++; if (lead) prefix++; } else lead = false; });
    total += r.length;
  });
  return { tokenAgreement: total ? same / total : 1, prefixAgreement: total ? prefix / total : 1 };
}

const exactMatch = (gen: readonly number[][], items: readonly EvalItem[]): number =>
  items.length ? items.filter((it, i) => it.answer.every((t, j) => gen[i][j] === t)).length / items.length : 0;

export async function endToEnd(o: {
  readonly float: { dir: string; manifest: BricksManifest };
  readonly quant: { dir: string; manifest: BricksManifest };
  readonly prompts: readonly Prompt[];
  readonly evalSet?: readonly EvalItem[];
  readonly newTokens: number;
  readonly generate?: GreedyGenerator;
  /** Float generations already computed for these prompts (sweeps reuse them). */
  readonly floatTokens?: { prompts: number[][]; eval?: number[][] };
}): Promise<EndToEnd & { floatTokens: { prompts: number[][]; eval?: number[][] } }> {
  const gen = o.generate ?? ortGreedyNoCache;
  const refP = o.floatTokens?.prompts ?? await gen(o.float.dir, o.float.manifest, o.prompts, o.newTokens);
  const gotP = await gen(o.quant.dir, o.quant.manifest, o.prompts, o.newTokens);
  let accuracy: number | null = null, floatAccuracy: number | null = null, evalTokenAgreement: number | null = null, refE: number[][] | undefined;
  if (o.evalSet?.length) {
    const longest = Math.max(...o.evalSet.map((e) => e.answer.length));
    refE = o.floatTokens?.eval ?? await gen(o.float.dir, o.float.manifest, o.evalSet.map((e) => e.prompt), longest);
    const gotE = await gen(o.quant.dir, o.quant.manifest, o.evalSet.map((e) => e.prompt), longest);
    floatAccuracy = exactMatch(refE, o.evalSet);
    accuracy = exactMatch(gotE, o.evalSet);
    // over each item's answer length: past the stop token, generation is noise the answer never shows
    const cut = (xs: number[][]) => xs.map((x, i) => x.slice(0, o.evalSet![i]!.answer.length));
    evalTokenAgreement = agreement(cut(refE), cut(gotE)).tokenAgreement;
  }
  return { ...agreement(refP, gotP), accuracy, floatAccuracy, evalTokenAgreement, prompts: o.prompts.length, newTokens: o.newTokens, floatTokens: { prompts: refP, eval: refE } };
}

/**
 * An eval set: JSON lines `{"input_ids": [...], "answer_ids": [...], "inputs": {"pixel_values": "x.npy"}}`
 * (npy paths relative to the file). Exact match means the first answer_ids.length greedy tokens equal it.
 */
export async function loadEvalSet(file: string): Promise<EvalItem[]> {
  const text = await readFile(file, 'utf8').catch(() => { throw fail('E_QUANT_EVAL', `${file}: cannot read the eval set`); });
  const items: EvalItem[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    let row: { input_ids?: unknown; answer_ids?: unknown; inputs?: Record<string, string> };
    try { row = JSON.parse(line); } catch { throw fail('E_QUANT_EVAL', `${file}:${i + 1}: invalid JSON`); }
    const ints = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x));
    if (!ints(row.input_ids) || !ints(row.answer_ids)) throw fail('E_QUANT_EVAL', `${file}:${i + 1}: expected input_ids and answer_ids arrays of integers`);
    const media: Record<string, ort.Tensor> = {};
    for (const [name, rel] of Object.entries(row.inputs ?? {})) {
      const a = await readNpyFile(resolve(dirname(file), rel));
      media[name] = new ort.Tensor('float32', Float32Array.from(a.data as ArrayLike<number>, Number), [...a.shape]);
    }
    items.push({ prompt: { inputIds: (row.input_ids as number[]).map(BigInt), media }, answer: row.answer_ids as number[] });
  }
  if (!items.length) throw fail('E_QUANT_EVAL', `${file}: no eval items`);
  return items;
}
