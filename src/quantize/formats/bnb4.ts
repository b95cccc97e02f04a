/**
 * MatMul weights to com.microsoft MatMulBnb4 (ORT contrib op; bitsandbytes' FP4 / NF4 formats), as
 * onnxruntime's `MatMulBnb4Quantizer` writes them (transformers.js' `_bnb4` files: NF4, block 64):
 *
 *   MatMul(A, W[K,N])  →  MatMulBnb4(A, B uint8[ceil(N·K/2)], absmax float[ceil(N·K/block)]) {K, N, block_size, quant_type}
 *
 * - the weight is quantized transposed, as bnb's Linear4bit stores it: W^T `[N, K]` flattened
 *   row-major and cut into blocks of `block` consecutive values (a block may span two output rows);
 * - per block, absmax = max |v|; each v/absmax maps to the nearest of the 16 code values (ties to the
 *   lower code, as ORT's comparison tree does);
 * - two codes per byte, the FIRST element in the HIGH nibble (the opposite of MatMulNBits);
 * - quant_type: 0 = FP4, 1 = NF4. Only MatMul qualifies (the quantizer ignores Gemm and Gather).
 */
import type { NodeProto } from 'onnx-buf';
import { makeTensor } from '../../onnx/builder.js';
import { DT } from '../../onnx/dtype.js';
import { MS_DOMAIN, type ModelEdit } from '../edit.js';
import { readFloat, transpose } from '../tensors.js';

export type Bnb4Type = 'fp4' | 'nf4';
export const BNB4_QUANT_TYPE: Readonly<Record<Bnb4Type, number>> = { fp4: 0, nf4: 1 };

/** Code → value, bitsandbytes' tables as ORT's blockwise_quant_block_bnb4.h holds them (float32). */
export const BNB4_TABLES: Readonly<Record<Bnb4Type, Float32Array>> = {
  nf4: Float32Array.from([
    -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
    -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
  ]),
  fp4: Float32Array.from([
    0, 5.208333333e-3, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25,
    -0, -5.208333333e-3, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25,
  ]),
};

/** Codes sorted by value, for nearest-value search. */
const SORTED: Readonly<Record<Bnb4Type, readonly number[]>> = {
  nf4: [...Array(16).keys()].sort((a, b) => BNB4_TABLES.nf4[a] - BNB4_TABLES.nf4[b]),
  fp4: [...Array(16).keys()].filter((c) => c !== 8).sort((a, b) => BNB4_TABLES.fp4[a] - BNB4_TABLES.fp4[b]), // −0 ≡ 0
};

/** Nearest code to x ∈ [−1, 1]; on a tie the lower value wins (ORT's `x > pivot` tree). */
export function bnb4Code(x: number, type: Bnb4Type): number {
  const order = SORTED[type], table = BNB4_TABLES[type];
  let best = order[0];
  for (let i = 1; i < order.length; i++) {
    const lo = table[order[i - 1]], hi = table[order[i]];
    if (x > Math.fround((lo + hi) / 2)) best = order[i];
    else break;
  }
  // FP4 keeps the sign bit for values that round to zero (ORT returns 0b1000 for small negatives).
  if (type === 'fp4' && best === 0 && x < 0) return 8;
  return best;
}

export interface Bnb4Quantized { readonly packed: Uint8Array; readonly absmax: Float32Array }

/** Quantizes a flattened tensor (W^T as [N, K] row-major) in blocks of `block`. */
export function quantizeBnb4(flat: Float32Array, block: number, type: Bnb4Type): Bnb4Quantized {
  const n = flat.length;
  const packed = new Uint8Array(Math.ceil(n / 2));
  const absmax = new Float32Array(Math.ceil(n / block));
  for (let b = 0; b < absmax.length; b++) {
    const s = b * block, e = Math.min(n, s + block);
    let m = 0;
    for (let i = s; i < e; i++) m = Math.max(m, Math.abs(flat[i]));
    absmax[b] = m;
    const inv = m ? Math.fround(1 / m) : 0;
    for (let i = s; i < e; i++) {
      const c = bnb4Code(Math.fround(flat[i] * inv), type);
      packed[i >> 1] |= i & 1 ? c : c << 4;
    }
  }
  return { packed, absmax };
}

/** The float64 values a quantized flat tensor stands for (the test oracle of the layout). */
export function dequantizeBnb4(q: Bnb4Quantized, n: number, block: number, type: Bnb4Type): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = BNB4_TABLES[type][i & 1 ? q.packed[i >> 1] & 15 : q.packed[i >> 1] >> 4] * q.absmax[Math.floor(i / block)];
  return out;
}

export interface Bnb4Params { readonly block: number; readonly type: Bnb4Type }

export async function toMatMulBnb4(edit: ModelEdit, p: Bnb4Params): Promise<number> {
  let count = 0;
  const out: NodeProto[] = [];
  for (const n of edit.nodes) {
    const w = edit.inits.get(n.input[1]);
    if (n.opType !== 'MatMul' || (n.domain && n.domain !== 'ai.onnx') || !w || w.dataType !== DT.FLOAT || w.dims.length !== 2) { out.push(n); continue; }
    const [K, N] = w.dims.map(Number);
    const q = quantizeBnb4(transpose(await readFloat(w, edit.dir), K, N), p.block, p.type);
    const b = edit.addInit(makeTensor(edit.unique(`${w.name}_Bnb4`), [q.packed.length], q.packed));
    const a = edit.addInit(makeTensor(edit.unique(`${w.name}_absmax`), [q.absmax.length], q.absmax));
    out.push(edit.node('MatMulBnb4', [n.input[0], b, a], n.output,
      { K, N, block_size: p.block, quant_type: BNB4_QUANT_TYPE[p.type] }, { name: `${n.name}_Bnb4`, domain: MS_DOMAIN }));
    count++;
  }
  edit.nodes = out;
  return count;
}
