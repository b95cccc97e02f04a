/**
 * Block quantization of weight matrices along the reduction axis, in the layout of ONNX Runtime's
 * com.microsoft MatMulNBits (docs/ContribOperators.md):
 *
 * - B: uint8 [N, k_blocks, blob_size], k_blocks = ceil(K / block), blob_size = block·bits/8; codes are
 *   packed along K within each block, low bits first (4-bit: element 2i in the low nibble of byte i);
 * - scales: [N, k_blocks], same float type as the activation;
 * - zero_points (optional): uint8 [N, ceil(k_blocks·bits/8)], packed like B; absent means 2^(bits−1).
 * - dequantized weight(k, n) = (code − zero_point) · scale.
 *
 * Symmetric blocks follow llama.cpp's Q4_0 / ORT's symmetric quantizer: the value of largest magnitude
 * maps to code 0 exactly (scale = that value / −2^(bits−1), so the scale may be negative) and zero is
 * representable; asymmetric blocks get a zero point (Q4_1-like). Rounding is to nearest, ties to even
 * (what numpy.round / ORT do). The same routine quantizes embedding rows for GatherBlockQuantized.
 */

export interface BlockParams {
  readonly bits: 4 | 8;
  readonly block: number;
  readonly symmetric: boolean;
}

export interface BlockQuantized {
  readonly K: number;
  readonly N: number;
  readonly kBlocks: number;
  /** Packed codes [N, kBlocks, block·bits/8]. */
  readonly packed: Uint8Array;
  /** [N, kBlocks] */
  readonly scales: Float32Array;
  /** Unpacked zero points [N, kBlocks] (2^(bits−1) everywhere when symmetric). */
  readonly zeroPoints: Uint8Array;
}

/** Round half to even, as numpy and ORT's quantizers do. */
export function roundEven(x: number): number {
  const r = Math.round(x); // halves go up: 2.5 → 3, −2.5 → −2
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

export interface PrescaleOpts {
  /** Multiplies input k before quantizing (AWQ). */
  readonly colScale?: Float32Array;
  /** Per-block range ratio ≤ 1, [N·kBlocks]. */
  readonly clip?: Float32Array;
}

export function allocBlocks(N: number, K: number, p: BlockParams): BlockQuantized {
  const kBlocks = Math.ceil(K / p.block);
  return {
    K, N, kBlocks, packed: new Uint8Array((N * kBlocks * p.block * p.bits) / 8),
    scales: new Float32Array(N * kBlocks), zeroPoints: new Uint8Array(N * kBlocks),
  };
}

/** Quantizes block b of output channel n from `vals` (the block's values, zero-padded to `block`). */
function putBlock(q: BlockQuantized, n: number, b: number, vals: Float64Array, p: BlockParams, opts: PrescaleOpts): void {
  const { bits, block } = p;
  const levels = (1 << bits) - 1;
  const bi = n * q.kBlocks + b;
  const { scale, zp } = blockScale(vals, p, opts.clip ? opts.clip[bi] : 1);
  q.scales[bi] = scale;
  q.zeroPoints[bi] = zp;
  const inv = scale === 0 ? 0 : 1 / scale;
  const base = (bi * block * bits) / 8;
  for (let i = 0; i < block; i++) {
    const c = Math.min(levels, Math.max(0, roundEven(vals[i] * inv) + zp));
    if (bits === 8) q.packed[base + i] = c;
    else q.packed[base + (i >> 1)] |= i & 1 ? c << 4 : c;
  }
}

/**
 * Quantizes output channels [n0, n0 + rows) given as `wNK` rows of K values (each output channel's
 * inputs contiguous: an embedding table as stored, a Gemm transB weight, a transposed MatMul weight)
 * into `q`. `colScale[k]` (AWQ) multiplies input k before quantizing; `clip` shrinks a block's range.
 */
export function quantizeRowsInto(q: BlockQuantized, wNK: Float32Array, n0: number, rows: number, p: BlockParams, opts: PrescaleOpts = {}): void {
  const { K, kBlocks } = q;
  const vals = new Float64Array(p.block);
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * p.block, len = Math.min(p.block, K - k0), row = r * K + k0;
      vals.fill(0);
      if (opts.colScale) for (let i = 0; i < len; i++) vals[i] = wNK[row + i] * opts.colScale[k0 + i];
      else for (let i = 0; i < len; i++) vals[i] = wNK[row + i];
      putBlock(q, n0 + r, b, vals, p, opts);
    }
}

/** Quantizes a whole weight given as [N, K] row-major (see `quantizeRowsInto`). */
export function quantizeBlocks(wNK: Float32Array, N: number, K: number, p: BlockParams, opts: PrescaleOpts = {}): BlockQuantized {
  const q = allocBlocks(N, K, p);
  quantizeRowsInto(q, wNK, 0, N, p, opts);
  return q;
}

/**
 * Quantizes a weight stored [K, N] (a MatMul weight as exporters write it) one block of K rows at a
 * time: `readRows(k0, k1)` returns rows [k0, k1) as [(k1 − k0), N]. Memory holds one row block and
 * the quantized result, never the float matrix or its transpose.
 */
export async function quantizeKN(readRows: (k0: number, k1: number) => Promise<Float32Array>, K: number, N: number, p: BlockParams,
  opts: PrescaleOpts = {}): Promise<BlockQuantized> {
  const q = allocBlocks(N, K, p);
  const vals = new Float64Array(p.block);
  for (let b = 0; b < q.kBlocks; b++) {
    const k0 = b * p.block, len = Math.min(p.block, K - k0);
    const rows = await readRows(k0, k0 + len);
    for (let n = 0; n < N; n++) {
      vals.fill(0);
      for (let i = 0; i < len; i++) vals[i] = rows[i * N + n] * (opts.colScale ? opts.colScale[k0 + i] : 1);
      putBlock(q, n, b, vals, p, opts);
    }
  }
  return q;
}

/** Scale and zero point of one block (values already scaled by AWQ), its range shrunk by `ratio`. */
export function blockScale(vals: ArrayLike<number>, p: BlockParams, ratio = 1): { scale: number; zp: number } {
  const levels = (1 << p.bits) - 1;
  const mid = 1 << (p.bits - 1);
  if (p.symmetric) {
    let m = 0;
    for (let i = 0; i < vals.length; i++) if (Math.abs(vals[i]) > Math.abs(m)) m = vals[i];
    // Stored as float32; the reference dequantization reads the same rounded value.
    return { scale: Math.fround((m * ratio) / -mid), zp: mid };
  }
  let lo = 0, hi = 0;
  for (let i = 0; i < vals.length; i++) { if (vals[i] < lo) lo = vals[i]; if (vals[i] > hi) hi = vals[i]; }
  lo *= ratio; hi *= ratio;
  const scale = Math.fround((hi - lo) / levels);
  if (scale === 0) return { scale: 0, zp: mid };
  return { scale, zp: Math.min(levels, Math.max(0, roundEven(-lo / scale))) };
}

/** Unpacked code of element i of a block blob starting at `base`. */
export function codeAt(packed: Uint8Array, base: number, i: number, bits: 4 | 8): number {
  if (bits === 8) return packed[base + i];
  const byte = packed[base + (i >> 1)];
  return i & 1 ? byte >> 4 : byte & 15;
}

/** Packs per-block zero points [N, kBlocks] as MatMulNBits wants them: [N, ceil(kBlocks·bits/8)]. */
export function packZeroPoints(zp: Uint8Array, N: number, kBlocks: number, bits: 4 | 8): Uint8Array {
  if (bits === 8) return zp.slice();
  const per = Math.ceil(kBlocks / 2);
  const out = new Uint8Array(N * per);
  for (let n = 0; n < N; n++)
    for (let b = 0; b < kBlocks; b++) out[n * per + (b >> 1)] |= b & 1 ? zp[n * kBlocks + b] << 4 : zp[n * kBlocks + b];
  return out;
}

/**
 * The float64 weight a block-quantized matrix stands for, as [K, N] row-major (k·N + n): the
 * reference that tests and error measurements compare ONNX Runtime with.
 */
export function dequantizeBlocks(q: Pick<BlockQuantized, 'K' | 'N' | 'kBlocks' | 'packed' | 'scales' | 'zeroPoints'>, bits: 4 | 8, block: number): Float64Array {
  const { K, N, kBlocks } = q;
  const blob = (block * bits) / 8;
  const out = new Float64Array(K * N);
  for (let n = 0; n < N; n++)
    for (let b = 0; b < kBlocks; b++) {
      const bi = n * kBlocks + b;
      const s = q.scales[bi], z = q.zeroPoints[bi];
      for (let i = 0; i < block && b * block + i < K; i++) out[(b * block + i) * N + n] = (codeAt(q.packed, bi * blob, i, bits) - z) * s;
    }
  return out;
}

/** Unpacks packed zero points ([N, ceil(kBlocks·bits/8)]) back to [N, kBlocks]. */
export function unpackZeroPoints(packed: Uint8Array, N: number, kBlocks: number, bits: 4 | 8): Uint8Array {
  if (bits === 8) return packed.slice();
  const per = Math.ceil(kBlocks / 2);
  const out = new Uint8Array(N * kBlocks);
  for (let n = 0; n < N; n++)
    for (let b = 0; b < kBlocks; b++) { const byte = packed[n * per + (b >> 1)]; out[n * kBlocks + b] = b & 1 ? byte >> 4 : byte & 15; }
  return out;
}
