/**
 * The native engine's packed weights (`decoder.nmq` + `native.json` in a bundle), written by the lift
 * (src/compile/native-lift.ts) and read by the native backend (src/run/backends/native/). One reader/writer.
 *
 * Block formats (block 32 along the input dimension, one block run per output row, row-major):
 * - Q4: fp16 scale d, then 16 bytes; weight j (< 16) = ((qs[j] & 15) - 8) · d, weight j + 16 = ((qs[j] >> 4) - 8) · d.
 *   18 bytes per 32 weights = 0.5625 B/weight (GGUF Q4_0's layout, so a Q4_0 tensor repacks by copy).
 * - Q8: fp16 scale d, then 32 int8; weight j = qs[j] · d. 34 bytes per 32 weights.
 * Norm weights and biases are float32. Every tensor starts at a multiple of 64 bytes.
 *
 * Tensor order (kernels/src/engine.h keeps the same): per layer attn_norm, q_norm, k_norm, wqkv, bqkv, wo,
 * ffn_norm, wgu, wdown; then final_norm, lm_head. wqkv rows are q heads, k heads, v heads; wgu rows are gate
 * then up. An absent tensor has offset -1.
 */
import { fail } from '../errors.js';
import { floatToHalf, halfToFloat } from '../onnx/dtype.js';
import type { DecoderDims } from './decoder-dims.js';

export const NATIVE_CONFIG_FILE = 'native.json';
export const NATIVE_WEIGHTS_FILE = 'decoder.nmq';
export const NATIVE_FORMAT_VERSION = 1;
export const QK = 32;
export type NativeBits = 4 | 8;

export const LAYER_TENSORS = ['attn_norm', 'q_norm', 'k_norm', 'wqkv', 'bqkv', 'wo', 'ffn_norm', 'wgu', 'wdown'] as const;
export type LayerTensor = (typeof LAYER_TENSORS)[number];

export interface NativeConfig extends DecoderDims {
  readonly formatVersion: number;
  readonly family: string;
  readonly bits: NativeBits;
  readonly qkNorm: boolean;
  readonly attnBias: boolean;
  /** Rotary inverse frequencies (headDim / 2), rope scaling already applied. */
  readonly invFreq: readonly number[];
  /** What the brick takes: 'input_ids' uses the float32 embedding table stored in `embedOffset`. */
  readonly takes: 'inputs_embeds' | 'input_ids';
  readonly embedOffset: number;
  /** Byte offsets, `layers × LAYER_TENSORS.length + 2` entries. */
  readonly offsets: readonly number[];
  readonly bytes: number;
  readonly sha256: string;
}

export const rowBytes = (bits: NativeBits, k: number): number => (k / QK) * (bits === 4 ? 18 : 34);

/** Quantizes w ([n rows][k], row-major float32) to Q4 / Q8 blocks with round-to-nearest. */
export function quantizeRows(bits: NativeBits, w: Float32Array, n: number, k: number): Uint8Array {
  if (k % QK !== 0 || w.length !== n * k) throw fail('E_NATIVE_SHAPE', `cannot pack a [${n}, ${k}] matrix in blocks of ${QK}`);
  const out = new Uint8Array(n * rowBytes(bits, k));
  const dv = new DataView(out.buffer);
  const nb = k / QK, bb = bits === 4 ? 18 : 34;
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) {
      const src = r * k + b * QK, at = (r * nb + b) * bb;
      let amax = 0, max = 0;
      for (let j = 0; j < QK; j++) { const v = w[src + j]!; if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; } }
      // Q4 as GGUF Q4_0: the largest-magnitude weight maps to -8, so the full 16 levels are used.
      const d = bits === 4 ? max / -8 : amax / 127;
      const h = floatToHalf(d);
      dv.setUint16(at, h, true);
      const dq = halfToFloat(h);
      const id = dq !== 0 ? 1 / dq : 0;
      if (bits === 8) {
        for (let j = 0; j < QK; j++) dv.setInt8(at + 2 + j, Math.max(-127, Math.min(127, Math.round(w[src + j]! * id))));
      } else {
        const q = (j: number): number => Math.max(0, Math.min(15, Math.round(w[src + j]! * id) + 8));
        for (let j = 0; j < 16; j++) out[at + 2 + j] = q(j) | (q(j + 16) << 4);
      }
    }
  return out;
}

/** Dequantizes packed rows to float64 (the tests' oracle side). */
export function dequantizeRows(bits: NativeBits, p: Uint8Array, n: number, k: number): Float64Array {
  const out = new Float64Array(n * k);
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const nb = k / QK, bb = bits === 4 ? 18 : 34;
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) {
      const at = (r * nb + b) * bb, d = halfToFloat(dv.getUint16(at, true)), dst = r * k + b * QK;
      if (bits === 8) for (let j = 0; j < QK; j++) out[dst + j] = dv.getInt8(at + 2 + j) * d;
      else for (let j = 0; j < 16; j++) {
        out[dst + j] = ((p[at + 2 + j]! & 15) - 8) * d;
        out[dst + j + 16] = ((p[at + 2 + j]! >> 4) - 8) * d;
      }
    }
  return out;
}

/** Checks a config read from disk field by field (a bundle may be hand-edited or from another version). */
export function checkNativeConfig(c: unknown, file: string): NativeConfig {
  const o = c as Record<string, unknown>;
  const bad = (what: string) => fail('E_NATIVE_CONFIG', `${file}: ${what}`, { file, hint: 'compile the bundle again' });
  if (!o || typeof o !== 'object') throw bad('not an object');
  if (o.formatVersion !== NATIVE_FORMAT_VERSION) throw bad(`formatVersion ${String(o.formatVersion)}, this runtime reads ${NATIVE_FORMAT_VERSION}`);
  for (const k of ['hidden', 'layers', 'heads', 'kvHeads', 'headDim', 'intermediate', 'vocab', 'bytes', 'embedOffset'])
    if (!Number.isSafeInteger(o[k])) throw bad(`${k} must be an integer`);
  if (o.bits !== 4 && o.bits !== 8) throw bad('bits must be 4 or 8');
  if (typeof o.rmsEps !== 'number') throw bad('rmsEps must be a number');
  if (!Array.isArray(o.invFreq) || o.invFreq.length !== (o.headDim as number) / 2) throw bad('invFreq must hold headDim / 2 numbers');
  if (!Array.isArray(o.offsets) || o.offsets.length !== (o.layers as number) * LAYER_TENSORS.length + 2) throw bad('offsets has the wrong length');
  if (o.takes !== 'inputs_embeds' && o.takes !== 'input_ids') throw bad('takes must be inputs_embeds or input_ids');
  return o as unknown as NativeConfig;
}
