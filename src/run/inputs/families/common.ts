/**
 * What the family processors share: reading their config fields with every problem collected (one
 * E_PREPROCESSOR listing all), the rescale → normalise → CHW step (image.ts owns its arithmetic), crops
 * and tensor stacking. (The rule for keys a family does not read is keys.ts.)
 */
import { fail } from '../../../errors.js';
import { preprocessDecoded, type ImageProcessorConfig } from '../image.js';
import type { Image8, PilResample } from '../pil-resize.js';
import type { TensorLike } from './types.js';

/** Collects config problems so that one error reports them all. */
export class ConfigReader {
  readonly issues: string[] = [];
  constructor(readonly cfg: Readonly<Record<string, unknown>>, readonly where: string) {}

  bool(key: string, dflt: boolean): boolean {
    const v = this.cfg[key];
    if (v === undefined || v === null) return dflt; // Python's `None` means "use the default"
    if (typeof v !== 'boolean') this.issues.push(`${key}: expected true or false, got ${JSON.stringify(v)}`);
    return v === true;
  }

  posInt(key: string, v: unknown, dflt?: number): number {
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (Number.isInteger(v) && (v as number) > 0) return v as number;
    this.issues.push(`${key}: expected a positive integer, got ${JSON.stringify(v)}`);
    return dflt ?? 1;
  }

  resample(dflt: PilResample): PilResample {
    const v = this.cfg.resample ?? dflt;
    if (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 5) return v as PilResample;
    this.issues.push(`resample: expected a PIL code 0..5, got ${JSON.stringify(v)}`);
    return dflt;
  }

  /** rescale + normalise settings with the family's defaults, checked by image.ts' own rules later. */
  norm(dflt: { mean: readonly number[]; std: readonly number[]; normalize: boolean }): ImageProcessorConfig {
    const c = this.cfg;
    return {
      do_resize: false,
      do_rescale: this.bool('do_rescale', true),
      rescale_factor: (c.rescale_factor as number | undefined) ?? 1 / 255,
      do_normalize: this.bool('do_normalize', dflt.normalize),
      image_mean: (c.image_mean as number[] | undefined) ?? dflt.mean,
      image_std: (c.image_std as number[] | undefined) ?? dflt.std,
    };
  }

  /** Throws E_PREPROCESSOR listing every issue, if any. */
  done(family: string): void {
    if (this.issues.length)
      throw fail('E_PREPROCESSOR', `${this.where}: ${this.issues.length} problem(s) in the ${family} image processor config`, {
        file: this.where, notes: this.issues,
      });
  }
}

/**
 * CPython's float floor division (float_floor_div) for a, b > 0. Not always Math.floor(a / b): for
 * 50 // 1.1111111111111112 Python gives 44.0 while 50 / 1.1111111111111112 rounds to 45.
 */
export function pyFloorDiv(a: number, b: number): number {
  const mod = a % b;
  const div = (a - mod) / b;
  if (!div) return 0;
  const floor = Math.floor(div);
  return div - floor > 0.5 ? floor + 1 : floor;
}

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;
export const HALF = [0.5, 0.5, 0.5] as const;

/** Rescale, normalise, HWC → CHW: a [3, H, W] float32 plane set (image.ts' arithmetic, numpy's). */
export async function toChw(img: Image8, norm: ImageProcessorConfig): Promise<Float32Array> {
  return (await preprocessDecoded(img, norm)).data;
}

/** Crops an 8-bit RGB image (x, y, w, h within bounds). */
export function crop8(img: Image8, x: number, y: number, w: number, h: number): Image8 {
  const out = new Uint8Array(w * h * 3);
  for (let r = 0; r < h; r++) out.set(img.data.subarray(((y + r) * img.width + x) * 3, ((y + r) * img.width + x + w) * 3), r * w * 3);
  return { data: out, width: w, height: h, channels: 3 };
}

export const f32 = (data: Float32Array, dims: readonly number[]): TensorLike => ({ type: 'float32', data, dims });
export const i64 = (values: readonly number[], dims: readonly number[]): TensorLike => ({ type: 'int64', data: BigInt64Array.from(values, BigInt), dims });

/** Concatenates same-typed tensors along axis 0 (all other dims equal). */
export function cat0(ts: readonly TensorLike[]): TensorLike {
  const [first] = ts;
  const rest = first.dims.slice(1);
  for (const t of ts) if (t.type !== first.type || t.dims.slice(1).join() !== rest.join()) throw fail('E_PREPROCESSOR', `cannot stack images of shapes ${first.dims.join('x')} and ${t.dims.join('x')}`);
  const n = ts.reduce((s, t) => s + t.data.length, 0);
  const data = first.type === 'float32' ? new Float32Array(n) : first.type === 'int64' ? new BigInt64Array(n) : new Uint8Array(n);
  let o = 0;
  for (const t of ts) {
    (data as Float32Array).set(t.data as Float32Array, o);
    o += t.data.length;
  }
  return { type: first.type, data, dims: [ts.reduce((s, t) => s + t.dims[0], 0), ...rest] } as TensorLike;
}
