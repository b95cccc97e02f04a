/** Weight access for the rewrites: float tensors in and out of TensorProtos, streamed quantization, transposes, fp16 bits. */
import { open } from 'node:fs/promises';
import type { TensorProto } from 'onnx-buf';
import { fail } from '../errors.js';
import { makeTensor } from '../onnx/builder.js';
import { DT, floatToHalf, halfToFloat, typedView } from '../onnx/dtype.js';
import { externalRef, inlineBytes, resolveInside, tensorBytes } from '../onnx/model-io.js';
import { allocBlocks, quantizeKN, quantizeRowsInto, type BlockParams, type BlockQuantized, type PrescaleOpts } from './block-quant.js';

export const isFloatWeight = (t: TensorProto): boolean => t.dataType === DT.FLOAT || t.dataType === DT.FLOAT16;

/** A float32 or float16 initializer's values as float32 (external data read on demand). */
export async function readFloat(t: TensorProto, dir: string): Promise<Float32Array> {
  const bytes = await tensorBytes(t, dir);
  // A view, not a copy (typedView copies only misaligned bytes): callers never write to it, and for a
  // large external tensor this halves peak memory.
  if (t.dataType === DT.FLOAT) return typedView(DT.FLOAT, bytes) as Float32Array;
  return toFloat32(t, bytes);
}

function toFloat32(t: TensorProto, bytes: Uint8Array): Float32Array {
  if (t.dataType === DT.FLOAT) return typedView(DT.FLOAT, bytes) as Float32Array;
  if (t.dataType === DT.FLOAT16) {
    const h = typedView(DT.FLOAT16, bytes) as Uint16Array;
    const out = new Float32Array(h.length);
    for (let i = 0; i < h.length; i++) out[i] = halfToFloat(h[i]);
    return out;
  }
  throw fail('E_QUANT_DTYPE', `tensor '${t.name}' is not float32 or float16`);
}

/**
 * Rows [r0, r1) of a rank-2 float tensor with `rowLen` values per row, as float32, read straight from
 * its external data file when it has one (so a large weight is never resident at once).
 */
export async function readFloatRows(t: TensorProto, dir: string, r0: number, r1: number, rowLen: number): Promise<Float32Array> {
  const width = t.dataType === DT.FLOAT16 ? 2 : 4;
  const start = r0 * rowLen * width, length = (r1 - r0) * rowLen * width;
  const ref = externalRef(t);
  if (!ref) return toFloat32(t, inlineBytes(t).subarray(start, start + length));
  const fh = await open(resolveInside(dir, ref.location, `tensor '${t.name}'`), 'r');
  try {
    const buf = new Uint8Array(length);
    const { bytesRead } = await fh.read(buf, 0, length, ref.offset + start);
    if (bytesRead !== length) throw fail('E_ONNX_EXTERNAL', `tensor '${t.name}': '${ref.location}' ended early`);
    return toFloat32(t, buf);
  } finally {
    await fh.close();
  }
}

/** [R, C] row-major → [C, R], in tiles so both sides stay in cache. */
export function transpose(a: Float32Array, R: number, C: number): Float32Array {
  const out = new Float32Array(R * C);
  const T = 64;
  for (let r0 = 0; r0 < R; r0 += T)
    for (let c0 = 0; c0 < C; c0 += T) {
      const r1 = Math.min(R, r0 + T), c1 = Math.min(C, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * R + r] = a[r * C + c];
    }
  return out;
}

const HALF_MAX = 65504;

/** float → fp16 bits, saturating at ±65504 (so −1e9 mask constants stay finite, as onnxconverter-common does). */
export function toHalfBits(v: Float32Array | readonly number[]): Uint16Array {
  const out = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = floatToHalf(Number.isFinite(v[i]) ? Math.max(-HALF_MAX, Math.min(HALF_MAX, v[i])) : v[i]);
  return out;
}

/** A float tensor of the given ONNX float type (float32 or float16). */
export function floatTensor(name: string, dims: readonly number[], v: Float32Array, dtype: DT): TensorProto {
  return dtype === DT.FLOAT16 ? makeTensor(name, dims, toHalfBits(v), 'float16') : makeTensor(name, dims, v);
}

const CHUNK_BYTES = 16 << 20;

/**
 * Block-quantizes a stored rank-2 weight without holding it in float: `'KN'` layout (MatMul `[K, N]`)
 * streams blocks of K rows, `'NK'` layout (embedding `[V, H]`, Gemm transB `[N, K]`) streams chunks of
 * whole output channels.
 */
export async function quantizeStored(t: TensorProto, dir: string, layout: 'KN' | 'NK', K: number, N: number, p: BlockParams,
  opts: PrescaleOpts = {}): Promise<BlockQuantized> {
  if (layout === 'KN') return quantizeKN((k0, k1) => readFloatRows(t, dir, k0, k1, N), K, N, p, opts);
  const q = allocBlocks(N, K, p);
  const rows = Math.max(1, Math.floor(CHUNK_BYTES / (4 * K)));
  for (let n0 = 0; n0 < N; n0 += rows) {
    const n1 = Math.min(N, n0 + rows);
    quantizeRowsInto(q, await readFloatRows(t, dir, n0, n1, K), n0, n1 - n0, p, opts);
  }
  return q;
}
