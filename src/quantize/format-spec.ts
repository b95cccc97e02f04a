/**
 * Brick formats by name, and what each means for the graph rewrite:
 *
 * | format      | rewrite                                                        | runs on (class) |
 * |-------------|----------------------------------------------------------------|-----------------|
 * | fp32        | none (the float brick, copied)                                 | any             |
 * | fp16        | float16 weights/activations, fp32 islands, fp32 interface     | npu / gpu       |
 * | w8a8        | static QDQ int8: per-channel weights, per-tensor activations   | npu             |
 * | w8a16[-gN]  | MatMulNBits bits 8 + GatherBlockQuantized 8-bit, block N (32)  | cpu / gpu       |
 * | w4a16[-gN]  | MatMulNBits bits 4 + GatherBlockQuantized 4-bit, block N (32)  | cpu / gpu       |
 */
import { fail } from '../errors.js';
import { FORMAT_PATTERN, type AcceleratorClass } from '../formats/quantized.js';
import type { BrickKind } from '../formats/names.js';

export type FormatSpec =
  | { readonly name: string; readonly kind: 'fp32' }
  | { readonly name: string; readonly kind: 'fp16' }
  | { readonly name: string; readonly kind: 'qdq'; readonly bits: 8 }
  | { readonly name: string; readonly kind: 'nbits'; readonly bits: 4 | 8; readonly block: number };

export function parseFormat(name: string): FormatSpec {
  const m = FORMAT_PATTERN.exec(name);
  if (!m) throw fail('E_QUANT_FORMAT', `unknown brick format '${name}'`,
    { hint: 'formats: fp32, fp16, w8a8, w8a16, w8a16-g128, w4a16-g32, w4a16-g128' });
  if (name === 'fp32') return { name, kind: 'fp32' };
  if (name === 'fp16') return { name, kind: 'fp16' };
  if (name === 'w8a8') return { name, kind: 'qdq', bits: 8 };
  const block = m[4] ? Number(m[4]) : 32;
  const bits = Number(m[2]) as 4 | 8;
  return { name: `w${bits}a16-g${block}`, kind: 'nbits', bits, block };
}

/** The accelerator class a format is made for on the paper's boards (RK3588: NPU int8/fp16, CPU 4-bit). */
export function acceleratorFor(spec: FormatSpec, kind: BrickKind): AcceleratorClass {
  if (spec.kind === 'qdq') return 'npu';
  if (spec.kind === 'fp16') return kind === 'vision' || kind === 'audio' || kind === 'projector' ? 'npu' : 'gpu';
  return 'cpu';
}

/** Weight bytes per parameter a format stores (scales included), for size estimates in sweeps. */
export function bitsPerWeight(spec: FormatSpec): number {
  switch (spec.kind) {
    case 'fp32': return 32;
    case 'fp16': return 16;
    case 'qdq': return 8;
    case 'nbits': return spec.bits + 32 / spec.block;
  }
}
