/**
 * Brick sets described by numbers only (no ONNX files), at the size of real models, for placement and
 * simulation tests: LLaVA-OneVision-0.5B's shape (SigLIP-400M vision tower + projector, Qwen2-0.5B).
 */
import type { BrickEntry, BricksManifest } from '../../src/formats/bricks.js';
import type { BrickInfo, BrickSetInfo } from '../../src/compile/analyze.js';
import { bytesPerParam, type WeightFormat } from '../../src/compile/formats.js';

const HIDDEN = 896, VOCAB = 151936, LAYERS = 24, KV_HEADS = 2, HEAD_DIM = 64, IMAGE_TOKENS = 729;

function brick(e: Partial<BrickEntry> & Pick<BrickEntry, 'name' | 'kind' | 'params'>, format: WeightFormat, extra: Partial<BrickInfo>): BrickInfo {
  const entry: BrickEntry = {
    file: `${e.name}.onnx`, dataFiles: [], sha256: '0'.repeat(64), inputs: [], outputs: [], bytes: Math.round(e.params * bytesPerParam(format)), nodes: 1, ...e,
  };
  return {
    entry, format, formatFrom: 'manifest', ops: new Set(['MatMul', 'Add']), opset: 17, dynamicDims: [], params: e.params, weightBytes: entry.bytes,
    flops: entry.flops?.value ?? 0, perToken: e.kind === 'decoder' || e.kind === 'embed', ...extra,
  };
}

export function onevisionLike(decoderFormat: WeightFormat, visionFormat: WeightFormat = 'fp32'): BrickSetInfo {
  const past = Array.from({ length: LAYERS }, (_, i) => ['key', 'value'].map((k) => ({ name: `past_key_values.${i}.${k}`, dtype: 'float32', shape: ['batch_size', KV_HEADS, 'past_sequence_length', HEAD_DIM] }))).flat();
  const vision = brick({
    name: 'vision', kind: 'vision', params: 400e6, flops: { per: 'image', value: 2 * 400e6 * IMAGE_TOKENS },
    inputs: [{ name: 'pixel_values', dtype: 'float32', shape: ['batch_size', 3, 384, 384] }],
    outputs: [{ name: 'image_features', dtype: 'float32', shape: ['batch_size', IMAGE_TOKENS, HIDDEN] }],
  }, visionFormat, { tokens: IMAGE_TOKENS, hidden: HIDDEN, ops: new Set(['Conv', 'MatMul', 'Add', 'Softmax', 'LayerNormalization']) });
  const embed = brick({
    name: 'embed', kind: 'embed', params: VOCAB * HIDDEN, flops: { per: 'token', value: 0 },
    inputs: [{ name: 'input_ids', dtype: 'int64', shape: ['batch_size', 'sequence_length'] }],
    outputs: [{ name: 'inputs_embeds', dtype: 'float32', shape: ['batch_size', 'sequence_length', HIDDEN] }],
  }, 'fp32', { hidden: HIDDEN, dynamicDims: ['sequence_length'], ops: new Set(['Gather']) });
  const decoder = brick({
    name: 'decoder', kind: 'decoder', params: 494e6, flops: { per: 'token', value: 2 * 494e6 },
    inputs: [{ name: 'inputs_embeds', dtype: 'float32', shape: ['batch_size', 'sequence_length', HIDDEN] }, { name: 'attention_mask', dtype: 'int64', shape: ['batch_size', 'total_sequence_length'] }, ...past],
    outputs: [{ name: 'logits', dtype: 'float32', shape: ['batch_size', 'sequence_length', VOCAB] }],
  }, decoderFormat, {
    hidden: HIDDEN, vocab: VOCAB, dynamicDims: ['sequence_length', 'total_sequence_length', 'past_sequence_length'],
    kv: { layers: LAYERS, elementsPerToken: LAYERS * 2 * KV_HEADS * HEAD_DIM, dtype: 'float32' },
    ops: new Set(decoderFormat.startsWith('w4') || decoderFormat === 'w8a16' ? ['MatMulNBits', 'Add', 'Range'] : ['MatMul', 'Add', 'Range']),
  });
  const manifest = {
    format: 'nanomind.bricks', version: 1, model: { id: 'onevision-0.5b-like', layout: 'split', source: '-' }, sources: [], files: [], verify: null, createdBy: 'test',
    bricks: [vision.entry, embed.entry, decoder.entry],
    connections: [{ from: 'embed.inputs_embeds', to: 'decoder.inputs_embeds' }, { from: 'vision.image_features', to: 'decoder.inputs_embeds', merge: { placeholderTokenId: 151646, mode: 'replace-rows' } }],
  } as BricksManifest;
  return { dir: '/nonexistent', manifest, bricks: [vision, embed, decoder], maxContext: 4096, config: undefined };
}

export const SYNTH = { HIDDEN, VOCAB, LAYERS, KV_HEADS, HEAD_DIM, IMAGE_TOKENS };
