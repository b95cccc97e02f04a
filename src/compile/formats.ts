/**
 * Weight formats as the compiler sees them: what a brick's weights cost in bytes, which compute dtype an
 * accelerator runs them at, and how to tell a brick's format from its ops when its manifest entry does
 * not say (brick sets written before `quantize` recorded formats).
 *
 * - `fp32`, `fp16`: float weights and activations.
 * - `w8a8`: int8 weights and activations (QDQ with static calibration; RKNN/RKLLM int8).
 * - `w8a16`: 8-bit weights, float activations (MatMulNBits bits=8).
 * - `w4a16-g32`, `w4a16-g128`: 4-bit weights in blocks of 32/128 with a float scale per block (MatMulNBits).
 */
import type { NodeProto, TensorProto } from 'onnx-buf';
import { DT } from '../onnx/dtype.js';

export const WEIGHT_FORMATS = ['fp32', 'fp16', 'w8a8', 'w8a16', 'w4a16-g32', 'w4a16-g128'] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

export const isWeightFormat = (f: unknown): f is WeightFormat => WEIGHT_FORMATS.includes(f as WeightFormat);
export const isFloatFormat = (f: WeightFormat): boolean => f === 'fp32' || f === 'fp16';

/** Bytes per parameter, counting block scales (fp32 scales, as ORT's MatMulNBits writes for fp32 models). */
export function bytesPerParam(f: WeightFormat): number {
  switch (f) {
    case 'fp32': return 4;
    case 'fp16': return 2;
    case 'w8a8': return 1;
    case 'w8a16': return 1 + 4 / 32;
    case 'w4a16-g32': return 0.5 + 4 / 32;
    case 'w4a16-g128': return 0.5 + 4 / 128;
  }
}

/** Bytes per activation element crossing a brick boundary or living in the KV cache. */
export const activationBytes = (f: WeightFormat, kind: 'cpu' | 'gpu' | 'npu'): number =>
  f === 'fp32' && kind !== 'npu' ? 4 : f === 'w8a8' && kind === 'npu' ? 1 : 2;

/**
 * The arithmetic an accelerator runs a format at: int8 for w8a8; on CPUs MatMulNBits with accuracy_level 4
 * quantizes activations to int8 too (DESIGN.md §7); elsewhere low-bit weights are dequantized to fp16.
 */
export function computeDtype(f: WeightFormat, kind: 'cpu' | 'gpu' | 'npu'): 'fp32' | 'fp16' | 'int8' {
  if (f === 'w8a8') return 'int8';
  if (f === 'fp32') return kind === 'npu' ? 'fp16' : 'fp32';
  if (f === 'fp16') return kind === 'cpu' ? 'fp32' : 'fp16';
  return kind === 'cpu' ? 'int8' : 'fp16';
}

/** A brick's format from its ops and initializers: MatMulNBits bits/block_size, int8 QDQ, float16 weights, else fp32. */
export function detectFormat(nodes: readonly NodeProto[], initializers: Iterable<TensorProto>): WeightFormat {
  const int = (n: NodeProto, k: string) => Number(n.attribute.find((a) => a.name === k)?.i ?? 0);
  const nbits = nodes.filter((n) => n.opType === 'MatMulNBits');
  if (nbits.length) {
    if (nbits.some((n) => int(n, 'bits') === 8)) return 'w8a16';
    return nbits.some((n) => int(n, 'block_size') > 64) ? 'w4a16-g128' : 'w4a16-g32';
  }
  const inits = [...initializers];
  const byName = new Map(inits.map((t) => [t.name, t]));
  if (nodes.some((n) => n.opType === 'QuantizeLinear') && nodes.some((n) => n.opType === 'DequantizeLinear' && [DT.INT8, DT.UINT8].includes(byName.get(n.input[2] ?? '')?.dataType ?? -1)))
    return 'w8a8';
  if (nodes.some((n) => n.opType === 'DequantizeLinear' && [DT.INT8, DT.UINT8].includes(byName.get(n.input[0])?.dataType ?? -1))) return 'w8a8';
  const floats = inits.filter((t) => t.dims.length >= 2 && (t.dataType === DT.FLOAT || t.dataType === DT.FLOAT16));
  if (floats.length && floats.filter((t) => t.dataType === DT.FLOAT16).length * 2 >= floats.length) return 'fp16';
  return 'fp32';
}
