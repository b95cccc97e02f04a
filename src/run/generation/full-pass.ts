/**
 * Feeds of a text-side brick (embed or decoder) for one pass over a whole prompt without a KV cache (or,
 * with `start` and `past`, for the rows after a cached prefix):
 * the reference runs that check a brick set — the partitioner's equivalence check, the quantizer's
 * calibration pass and its independent no-cache greedy generator — all build their embed → merge →
 * decoder feeds here, so a decoder convention (generation/decoder-inputs.ts), an empty float16 cache or
 * a float16 merge target is handled once for all of them.
 *
 * The runtime's own generation loop (chat-session.ts) feeds decoders through the same
 * `decoderInputs` / `stepFeeds`, with its KV cache and arena instead.
 */
import { isReplaceRows, type BrickEntry, type Connection, type TensorSpec } from '../../formats/bricks.js';
import { replacePlaceholderRows } from '../../formats/merge.js';
import { TENSOR } from '../../formats/names.js';
import { floatToHalf } from '../../onnx/dtype.js';
import type { TensorData, TensorLike } from '../backend.js';
import { tensor, toFloat32 } from '../feeds.js';
import { decoderInputs, stepFeeds } from './decoder-inputs.js';

export interface FullPassContext {
  /** The prompt; placeholder ids mark the rows that merged features replace. */
  readonly ids: readonly bigint[];
  /** Ids used to find placeholder rows (default `ids`): generated tokens that equal a placeholder are text. */
  readonly mergeIds?: readonly bigint[];
  readonly connections: readonly Connection[];
  /** Another brick's output by `brick.tensor`. */
  value(endpoint: string): TensorLike | undefined;
  /** A value the caller supplies for an input (e.g. calibration data); wins over the defaults. */
  given?(spec: TensorSpec): TensorLike | undefined;
  /** config.json's model_type (position conventions). */
  readonly modelType?: string;
  /** Position of `ids[0]`: the tokens before it are in the cache `past` gives (default 0: no cache). */
  readonly start?: number;
  /** The cache for a decoder past input (default: empty). */
  past?(name: string): TensorLike | undefined;
  /** mRoPE positions of the first rows (3 rows of n, the family's rope index for the prompt); rows past n
   *  (generated tokens) continue at max + 1 on every row, as Qwen2-VL's get_rope_index. */
  readonly positions3?: BigInt64Array;
}

/**
 * Where text after a Qwen2-VL prompt continues, as its get_rope_index: at max + 1 of every row of the prompt's
 * positions, on all three rows. The one owner of that rule (chat sessions and full passes both use it).
 */
export function mropeContinuation(positions: Iterable<bigint>): bigint {
  let max = -1n;
  for (const p of positions) if (p > max) max = p;
  return max + 1n;
}

/** `p3` (3 rows of n prompt positions) extended to `total` rows: later rows continue per `mropeContinuation`. */
export function extendMrope(p3: BigInt64Array, total: number): BigInt64Array {
  const n = p3.length / 3;
  if (n === total) return p3;
  const next = mropeContinuation(p3);
  const out = new BigInt64Array(3 * total);
  for (let a = 0; a < 3; a++) {
    out.set(p3.subarray(a * n, (a + 1) * n), a * total);
    for (let i = n; i < total; i++) out[a * total + i] = next + BigInt(i - n);
  }
  return out;
}

export interface FullPassFeeds {
  readonly feeds: Record<string, TensorLike>;
  /** Inputs nothing could be fed to. */
  readonly missing: readonly string[];
}

const PAST = /^past_key_values\./;

const EMPTY: Record<string, new (n: number) => TensorData> = { float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array };

/** An empty cache tensor: batch 1, zero past length, the declared (fixed) heads and head dim. */
function emptyPast(spec: TensorSpec): TensorLike | undefined {
  const Ctor = EMPTY[spec.dtype];
  if (!Ctor || !spec.shape) return undefined;
  const dims = spec.shape.map((d, i) => (i === 0 ? 1 : i === 2 ? 0 : d));
  if (!dims.every((d): d is number => typeof d === 'number')) return undefined;
  return tensor(spec.dtype, new Ctor(0), dims);
}

export function fullPassFeeds(b: BrickEntry, ctx: FullPassContext): FullPassFeeds {
  const seq = ctx.ids.length;
  const start = ctx.start ?? 0;
  const feeds: Record<string, TensorLike> = {};
  const missing: string[] = [];
  const dec = b.kind === 'decoder' ? decoderInputs(b, ctx.modelType) : undefined;
  const conventions = dec
    ? stepFeeds(dec, {
      from: start, to: start + seq, mask: new BigInt64Array(start + seq).fill(1n), allLogits: true,
      positions: BigInt64Array.from({ length: seq }, (_, k) => BigInt(start + k + dec.positionStart)),
      // A full pass from 0 only: a cached step (start > 0) is a verification run of 2-D decoders.
      positions3: ctx.positions3 && start === 0 ? extendMrope(ctx.positions3, seq) : undefined,
    })
    : {};
  for (const i of b.inputs) {
    const key = `${b.name}.${i.name}`;
    const plain = ctx.connections.find((c) => c.to === key && !c.merge);
    let t = (plain ? ctx.value(plain.from) : undefined) ?? ctx.given?.(i);
    if (!t && i.name === TENSOR.inputIds) t = tensor('int64', BigInt64Array.from(ctx.ids), [1, seq]);
    if (!t) t = conventions[i.name];
    if (!t && PAST.test(i.name)) t = ctx.past?.(i.name) ?? emptyPast(i);
    if (!t) { missing.push(i.name); continue; }
    const merges = ctx.connections.filter(isReplaceRows).filter((c) => c.to === key);
    const mergeIds = ctx.mergeIds ?? ctx.ids;
    const wanted = merges.filter((c) => mergeIds.includes(BigInt(c.merge.placeholderTokenId)) && ctx.value(c.from));
    if (wanted.length) {
      // Rows are replaced in float32; a float16 target (an fp16 embed brick) is converted back after.
      const hidden = t.dims[t.dims.length - 1]!;
      const data = Float32Array.from(toFloat32(t, i.name));
      for (const c of wanted)
        replacePlaceholderRows(data, mergeIds, c.merge.placeholderTokenId, toFloat32(ctx.value(c.from)!, c.from), hidden);
      t = t.type === 'float16' ? tensor('float16', Uint16Array.from(data, floatToHalf), t.dims) : tensor('float32', data, t.dims);
    }
    feeds[i.name] = t;
  }
  return { feeds, missing };
}
