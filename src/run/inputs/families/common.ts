/**
 * What the family processors share: reading their config fields with every problem collected (one
 * E_PREPROCESSOR listing all), the rescale → normalise → CHW step (image.ts owns its arithmetic), and the
 * rule for preprocessor_config.json keys a family does not honour.
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

/**
 * Keys that change what a processor outputs. One that a family does not honour, set to anything but
 * off (false / null), is an error: silently ignoring it would feed the model a different image than
 * Hugging Face's processor would (tiles it never saw, a crop, a pad…).
 */
const OUTPUT_CHANGING = [
  'do_image_splitting', 'do_pan_and_scan', 'image_grid_pinpoints', 'do_center_crop', 'min_pixels', 'max_pixels',
  'patch_size', 'merge_size', 'temporal_patch_size', 'max_image_size', 'do_pad', 'pad_size', 'size_divisor',
  'size_divisibility', 'do_crop_margin', 'do_thumbnail', 'do_flip_channel_order', 'keep_aspect_ratio',
  'ensure_multiple_of', 'do_convert_grayscale',
];
/** Keys that only name things (no effect on the pixels). */
const INERT = ['image_processor_type', 'processor_class', 'feature_extractor_type', 'auto_map', 'do_convert_rgb', '_valid_processor_keys'];

/**
 * Applies the key rule: unsupported output-changing keys → E_PREPROCESSOR_UNSUPPORTED (all listed);
 * other keys the family does not read → returned as notices for the caller to print.
 */
export function checkKeys(cfg: Readonly<Record<string, unknown>>, where: string, family: string, reads: readonly string[]): string[] {
  const unsupported: string[] = [], notices: string[] = [];
  for (const [k, v] of Object.entries(cfg)) {
    if (reads.includes(k) || INERT.includes(k)) continue;
    if (OUTPUT_CHANGING.includes(k)) {
      if (v !== false && v !== null) unsupported.push(`${k} = ${JSON.stringify(v)}: the ${family} processor does not implement it`);
    } else notices.push(`${where}: "${k}" is not used by the ${family} image processor`);
  }
  if (unsupported.length)
    throw fail('E_PREPROCESSOR_UNSUPPORTED', `${where}: ${unsupported.length} setting(s) the ${family} image processor does not support`, {
      file: where, notes: unsupported, hint: 'remove the setting or set it to false if the model does not need it',
    });
  return notices;
}
