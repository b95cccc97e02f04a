/**
 * The decoder's input conventions, in one place. Hub exports of the same architecture differ in what
 * their decoder takes besides the embeddings and the KV cache:
 *
 * | input | shape | value for the new rows [from, to) | seen in |
 * |---|---|---|---|
 * | `attention_mask` | [1, to] | 1 per token (0 for left padding) | every export |
 * | `position_ids` | [1, S] or [3, 1, S] | cumsum(mask) − 1 (+1 for Gemma 3, as transformers.js feeds); three rows (temporal, height, width) for Qwen2-VL's mRoPE | Optimum exports; GroupQueryAttention exports omit it |
 * | `cache_position` | [S] | from … to − 1 | newer Optimum exports |
 * | `use_cache_branch` | [1] bool | past length > 0 | Optimum "merged" decoders (an If over two branches) |
 * | `num_logits_to_keep` | [] int64 | 1: logits of the last row only | Gemma 3 (onnx-community export) |
 * | `token_type_ids` | [1, S] | 1 where a row holds encoder features, else 0 | PaliGemma-style exports that mark image rows (transformers.js 4.3.1 feeds it to none; the Gemma 3 export does not declare it) |
 *
 * `decoderInputs` reads which of these a decoder declares (and refuses any it does not know, naming
 * them); `stepFeeds` builds their values for one step. The generation loop, the quantizer's greedy
 * check and the partitioner's verification all feed decoders through these two functions.
 */
import { fail } from '../../errors.js';
import type { BrickEntry, TensorSpec } from '../../formats/bricks.js';
import { TENSOR } from '../../formats/names.js';
import type { TensorLike } from '../backend.js';
import { tensor } from '../feeds.js';

export const INPUT = {
  cachePosition: 'cache_position',
  useCacheBranch: 'use_cache_branch',
  numLogitsToKeep: 'num_logits_to_keep',
  tokenTypeIds: 'token_type_ids',
} as const;

const PAST = /^past_key_values\.\d+\.(key|value)$/;

/** Families whose exports were traced with 1-based positions (transformers.js `create_position_ids(…, 1)`). */
const ONE_BASED_POSITIONS = new Set(['gemma3', 'gemma3_text', 'paligemma']);

export interface DecoderInputs {
  /** What carries the tokens: merged embeddings (float32 or float16 at the boundary) or ids. */
  readonly takes: 'inputs_embeds' | 'input_ids';
  readonly embedsType: 'float32' | 'float16';
  readonly attentionMask: boolean;
  /** 'flat': [1, S]; 'mrope': [3, 1, S] (Qwen2-VL / Qwen2.5-VL). */
  readonly positions: 'none' | 'flat' | 'mrope';
  /** Added to cumsum(mask) − 1. */
  readonly positionStart: number;
  readonly cachePosition: boolean;
  readonly useCacheBranch: boolean;
  readonly numLogitsToKeep: boolean;
  readonly tokenTypeIds: boolean;
}

const spec = (dec: BrickEntry, name: string): TensorSpec | undefined => dec.inputs.find((i) => i.name === name);

/** The conventions a decoder brick's declared inputs call for; `modelType` is config.json's `model_type`. */
export function decoderInputs(dec: BrickEntry, modelType?: string): DecoderInputs {
  const embeds = spec(dec, TENSOR.inputsEmbeds);
  const ids = spec(dec, TENSOR.inputIds);
  if (!embeds && !ids)
    throw fail('E_BRICKS_ROLE', `decoder '${dec.name}' takes neither inputs_embeds nor input_ids`, { notes: dec.inputs.map((i) => i.name) });
  if (embeds && embeds.dtype !== 'float32' && embeds.dtype !== 'float16')
    throw fail('E_UNSUPPORTED', `decoder '${dec.name}': inputs_embeds is ${embeds.dtype}; the runtime feeds float32 or float16`);
  const known = new Set<string>([TENSOR.inputsEmbeds, TENSOR.inputIds, TENSOR.attentionMask, TENSOR.positionIds, ...Object.values(INPUT)]);
  const unknown = dec.inputs.filter((i) => !known.has(i.name) && !PAST.test(i.name)).map((i) => i.name);
  if (unknown.length)
    throw fail('E_BRICKS_ROLE', `decoder '${dec.name}' has input(s) the runtime does not know how to feed: ${unknown.join(', ')}`,
      { hint: `the runtime feeds inputs_embeds or input_ids, past_key_values.{i}.key|value, ${[TENSOR.attentionMask, TENSOR.positionIds, ...Object.values(INPUT)].join(', ')}` });
  const pos = spec(dec, TENSOR.positionIds);
  const rank = pos?.shape?.length;
  if (pos && rank !== undefined && rank !== 2 && rank !== 3)
    throw fail('E_UNSUPPORTED', `decoder '${dec.name}': position_ids of rank ${rank}; the runtime feeds [batch, seq] or mRoPE's [3, batch, seq]`);
  return {
    takes: embeds ? 'inputs_embeds' : 'input_ids',
    embedsType: embeds?.dtype === 'float16' ? 'float16' : 'float32',
    attentionMask: !!spec(dec, TENSOR.attentionMask),
    positions: !pos ? 'none' : rank === 3 ? 'mrope' : 'flat',
    positionStart: modelType && ONE_BASED_POSITIONS.has(modelType) ? 1 : 0,
    cachePosition: !!spec(dec, INPUT.cachePosition),
    useCacheBranch: !!spec(dec, INPUT.useCacheBranch),
    numLogitsToKeep: !!spec(dec, INPUT.numLogitsToKeep),
    tokenTypeIds: !!spec(dec, INPUT.tokenTypeIds),
  };
}

export interface StepState {
  /** Rows [from, to) are fed this step; rows before `from` are in the KV cache (0 without a cache). */
  readonly from: number;
  readonly to: number;
  /** attention_mask over [0, to). */
  readonly mask: BigInt64Array;
  /** Flat positions of rows [from, to). */
  readonly positions: BigInt64Array;
  /** mRoPE positions of rows [from, to): 3 rows of (to − from), temporal then height then width. */
  readonly positions3?: BigInt64Array;
  /** Whether each row [from, to) holds encoder features (token_type_ids). */
  readonly featureRows?: Uint8Array;
  /** Logits for every row (a verification run), not only the last. */
  readonly allLogits?: boolean;
}

/** Values of every declared input except the tokens (inputs_embeds / input_ids) and the KV cache. */
export function stepFeeds(c: DecoderInputs, s: StepState): Record<string, TensorLike> {
  const S = s.to - s.from;
  const f: Record<string, TensorLike> = {};
  if (c.attentionMask) f[TENSOR.attentionMask] = tensor('int64', s.mask.subarray(0, s.to), [1, s.to]);
  if (c.positions === 'flat') f[TENSOR.positionIds] = tensor('int64', s.positions, [1, S]);
  else if (c.positions === 'mrope') {
    let p3 = s.positions3;
    if (!p3) {
      // Text only: the three rotary sections share one position.
      p3 = new BigInt64Array(3 * S);
      for (let a = 0; a < 3; a++) p3.set(s.positions, a * S);
    }
    if (p3.length !== 3 * S) throw fail('E_BAD_INPUT', `mRoPE positions hold ${p3.length} values for ${S} rows (need 3 × ${S})`);
    f[TENSOR.positionIds] = tensor('int64', p3, [3, 1, S]);
  }
  if (c.cachePosition) f[INPUT.cachePosition] = tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(s.from + i)), [S]);
  if (c.useCacheBranch) f[INPUT.useCacheBranch] = tensor('bool', Uint8Array.of(s.from > 0 ? 1 : 0), [1]);
  if (c.numLogitsToKeep) f[INPUT.numLogitsToKeep] = tensor('int64', BigInt64Array.of(s.allLogits ? 0n : 1n), []);
  if (c.tokenTypeIds) {
    const t = new BigInt64Array(S);
    if (s.featureRows) for (let i = 0; i < S; i++) t[i] = s.featureRows[i] ? 1n : 0n;
    f[INPUT.tokenTypeIds] = tensor('int64', t, [1, S]);
  }
  return f;
}
