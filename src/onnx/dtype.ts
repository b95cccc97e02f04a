/**
 * ONNX element types: names (as onnxruntime spells them), storage widths, and typed-array views.
 * Sub-byte types (int4/uint4/float4, int2/uint2) are packed low nibble first, as the ONNX spec says.
 */
import { TensorProto_DataType as DT } from 'onnx-buf';
import { fail } from '../errors.js';

export { DT };

export type DTypeName =
  | 'float32' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'int32' | 'int64' | 'string' | 'bool' | 'float16'
  | 'float64' | 'uint32' | 'uint64' | 'complex64' | 'complex128' | 'bfloat16' | 'float8e4m3fn'
  | 'float8e4m3fnuz' | 'float8e5m2' | 'float8e5m2fnuz' | 'uint4' | 'int4' | 'float4e2m1' | 'float8e8m0'
  | 'uint2' | 'int2';

interface DTypeInfo { readonly name: DTypeName; readonly bits: number }

const INFO: Record<number, DTypeInfo> = {
  [DT.FLOAT]: { name: 'float32', bits: 32 },
  [DT.UINT8]: { name: 'uint8', bits: 8 },
  [DT.INT8]: { name: 'int8', bits: 8 },
  [DT.UINT16]: { name: 'uint16', bits: 16 },
  [DT.INT16]: { name: 'int16', bits: 16 },
  [DT.INT32]: { name: 'int32', bits: 32 },
  [DT.INT64]: { name: 'int64', bits: 64 },
  [DT.STRING]: { name: 'string', bits: 0 },
  [DT.BOOL]: { name: 'bool', bits: 8 },
  [DT.FLOAT16]: { name: 'float16', bits: 16 },
  [DT.DOUBLE]: { name: 'float64', bits: 64 },
  [DT.UINT32]: { name: 'uint32', bits: 32 },
  [DT.UINT64]: { name: 'uint64', bits: 64 },
  [DT.COMPLEX64]: { name: 'complex64', bits: 64 },
  [DT.COMPLEX128]: { name: 'complex128', bits: 128 },
  [DT.BFLOAT16]: { name: 'bfloat16', bits: 16 },
  [DT.FLOAT8E4M3FN]: { name: 'float8e4m3fn', bits: 8 },
  [DT.FLOAT8E4M3FNUZ]: { name: 'float8e4m3fnuz', bits: 8 },
  [DT.FLOAT8E5M2]: { name: 'float8e5m2', bits: 8 },
  [DT.FLOAT8E5M2FNUZ]: { name: 'float8e5m2fnuz', bits: 8 },
  [DT.UINT4]: { name: 'uint4', bits: 4 },
  [DT.INT4]: { name: 'int4', bits: 4 },
  [DT.FLOAT4E2M1]: { name: 'float4e2m1', bits: 4 },
  [DT.FLOAT8E8M0]: { name: 'float8e8m0', bits: 8 },
  [DT.UINT2]: { name: 'uint2', bits: 2 },
  [DT.INT2]: { name: 'int2', bits: 2 },
};

const BY_NAME = new Map<string, DT>(Object.entries(INFO).map(([k, v]) => [v.name, Number(k) as DT]));

export function dtypeInfo(t: DT): DTypeInfo {
  const info = INFO[t];
  if (!info) throw fail('E_ONNX_DTYPE', `unknown ONNX element type ${t}`);
  return info;
}

export const dtypeName = (t: DT): DTypeName => dtypeInfo(t).name;

export function dtypeFromName(name: string): DT {
  const t = BY_NAME.get(name === 'float' ? 'float32' : name === 'double' ? 'float64' : name);
  if (t === undefined) throw fail('E_ONNX_DTYPE', `unknown element type '${name}'`);
  return t;
}

/** Bytes needed to store `count` elements, rounding packed sub-byte types up to whole bytes. */
export function storageBytes(t: DT, count: number): number {
  const { bits, name } = dtypeInfo(t);
  if (bits === 0) throw fail('E_ONNX_DTYPE', `${name} tensors have no fixed storage size`);
  return Math.ceil((count * bits) / 8);
}

export const isFloat = (t: DT): boolean =>
  t === DT.FLOAT || t === DT.FLOAT16 || t === DT.DOUBLE || t === DT.BFLOAT16;

export type NumericArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array;

/**
 * A typed-array view of little-endian tensor bytes, without copying when the bytes are aligned.
 * float16/bfloat16 come back as their raw Uint16 bits; sub-byte and float8 types as packed Uint8 bytes.
 */
export function typedView(t: DT, bytes: Uint8Array): NumericArray {
  const ctor = typedCtor(t);
  const width = ctor.BYTES_PER_ELEMENT;
  // Copy when misaligned (Buffer.slice would alias, so build a fresh Uint8Array).
  const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes);
  return new ctor(aligned.buffer, aligned.byteOffset, Math.floor(aligned.byteLength / width));
}

type TypedCtor = { new (b: ArrayBufferLike, o: number, n: number): NumericArray; BYTES_PER_ELEMENT: number };

function typedCtor(t: DT): TypedCtor {
  switch (t) {
    case DT.FLOAT: case DT.COMPLEX64: return Float32Array;
    case DT.DOUBLE: case DT.COMPLEX128: return Float64Array;
    case DT.INT8: return Int8Array;
    case DT.INT16: return Int16Array;
    case DT.UINT16: case DT.FLOAT16: case DT.BFLOAT16: return Uint16Array;
    case DT.INT32: return Int32Array;
    case DT.UINT32: return Uint32Array;
    case DT.INT64: return BigInt64Array;
    case DT.UINT64: return BigUint64Array;
    case DT.STRING: throw fail('E_ONNX_DTYPE', 'string tensors have no numeric view');
    default: return Uint8Array;
  }
}

/** IEEE half → float (for float16 bits stored as uint16). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float → IEEE half bits, round to nearest even. */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

export const bfloat16ToFloat = (b: number): number => { u32[0] = b << 16; return f32[0]; };
