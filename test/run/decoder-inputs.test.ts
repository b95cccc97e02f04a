/**
 * The decoder input conventions of hub exports (src/run/generation/decoder-inputs.ts): which inputs a
 * decoder declares, and their values per step, written out by hand from transformers.js'
 * decoder_forward / create_position_ids / setNumLogitsToKeep semantics.
 */
import { describe, expect, it } from 'vitest';
import type { BrickEntry, TensorSpec } from '../../src/formats/bricks.js';
import { decoderInputs, stepFeeds } from '../../src/run/generation/decoder-inputs.js';
import { codeOf } from '../error-codes.js';

const t = (name: string, dtype: string, shape: (number | string)[]): TensorSpec => ({ name, dtype, shape });
const dec = (inputs: TensorSpec[]): BrickEntry => ({
  name: 'decoder', kind: 'decoder', file: 'decoder.onnx', inputs, outputs: [t('logits', 'float32', [1, 's', 10])],
  params: 0, bytes: 0, sha256: '0'.repeat(64),
} as unknown as BrickEntry);
const values = (x: { data: ArrayLike<number | bigint> }) => Array.from(x.data, Number);

describe('decoderInputs', () => {
  it('reads every convention a decoder declares', () => {
    const c = decoderInputs(dec([
      t('inputs_embeds', 'float16', [1, 's', 8]), t('attention_mask', 'int64', [1, 't']), t('position_ids', 'int64', [3, 1, 's']),
      t('cache_position', 'int64', ['s']), t('use_cache_branch', 'bool', [1]), t('num_logits_to_keep', 'int64', []),
      t('token_type_ids', 'int64', [1, 's']), t('past_key_values.0.key', 'float16', [1, 2, 'p', 4]),
    ]), 'gemma3');
    expect(c).toEqual({
      takes: 'inputs_embeds', embedsType: 'float16', attentionMask: true, positions: 'mrope', positionStart: 1,
      cachePosition: true, useCacheBranch: true, numLogitsToKeep: true, tokenTypeIds: true,
    });
    expect(decoderInputs(dec([t('input_ids', 'int64', [1, 's'])]), 'qwen2')).toMatchObject({ takes: 'input_ids', positions: 'none', positionStart: 0 });
  });

  it('refuses inputs it cannot feed, naming them', () => {
    expect(codeOf(() => decoderInputs(dec([t('input_ids', 'int64', [1, 's']), t('pixel_values_videos', 'float32', [1, 3])])))).toBe('E_BRICKS_ROLE');
    expect(codeOf(() => decoderInputs(dec([t('inputs_embeds', 'int8', [1, 's', 8])])))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => decoderInputs(dec([t('input_ids', 'int64', [1, 's']), t('position_ids', 'int64', [1, 1, 1, 's'])])))).toBe('E_UNSUPPORTED');
  });
});

describe('stepFeeds', () => {
  const all = decoderInputs(dec([
    t('input_ids', 'int64', [1, 's']), t('attention_mask', 'int64', [1, 't']), t('position_ids', 'int64', [1, 's']),
    t('cache_position', 'int64', ['s']), t('use_cache_branch', 'bool', [1]), t('num_logits_to_keep', 'int64', []),
    t('token_type_ids', 'int64', [1, 's']),
  ]));
  const mask = BigInt64Array.from([1n, 1n, 1n, 1n, 1n]);

  it('prefill: the whole prompt, no cache yet, logits of the last row', () => {
    const f = stepFeeds(all, { from: 0, to: 4, mask, positions: BigInt64Array.from([0n, 1n, 2n, 3n]), featureRows: Uint8Array.from([0, 1, 1, 0]) });
    expect(f.attention_mask!.dims).toEqual([1, 4]);
    expect(values(f.position_ids!)).toEqual([0, 1, 2, 3]);
    expect(values(f.cache_position!)).toEqual([0, 1, 2, 3]);
    expect(f.use_cache_branch).toMatchObject({ type: 'bool', dims: [1] });
    expect(values(f.use_cache_branch!)).toEqual([0]);
    expect(f.num_logits_to_keep).toMatchObject({ type: 'int64', dims: [] });
    expect(values(f.num_logits_to_keep!)).toEqual([1]);
    expect(values(f.token_type_ids!)).toEqual([0, 1, 1, 0]);
  });

  it('decode step: one row after a cached prefix; a verification run keeps every row of logits', () => {
    const f = stepFeeds(all, { from: 4, to: 5, mask, positions: BigInt64Array.from([4n]), allLogits: true });
    expect(f.attention_mask!.dims).toEqual([1, 5]);
    expect(values(f.cache_position!)).toEqual([4]);
    expect(values(f.use_cache_branch!)).toEqual([1]);
    expect(values(f.num_logits_to_keep!)).toEqual([0]);
    expect(values(f.token_type_ids!)).toEqual([0]);
  });

  it('mRoPE: three rows, text positions repeated unless given', () => {
    const m = decoderInputs(dec([t('inputs_embeds', 'float32', [1, 's', 8]), t('position_ids', 'int64', [3, 1, 's'])]));
    const f = stepFeeds(m, { from: 0, to: 2, mask, positions: BigInt64Array.from([0n, 1n]) });
    expect(f.position_ids!.dims).toEqual([3, 1, 2]);
    expect(values(f.position_ids!)).toEqual([0, 1, 0, 1, 0, 1]);
    const g = stepFeeds(m, { from: 0, to: 2, mask, positions: BigInt64Array.from([0n, 1n]), positions3: BigInt64Array.from([0n, 1n, 0n, 2n, 0n, 3n]) });
    expect(values(g.position_ids!)).toEqual([0, 1, 0, 2, 0, 3]);
  });
});
