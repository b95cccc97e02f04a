/**
 * Image file → `pixel_values` [1, 3, H, W] float32 for a vision encoder, with the semantics of Hugging
 * Face's CLIP / SigLIP-style image processors (`BaseImageProcessor` subclasses that resize, centre-crop,
 * rescale and normalise one image; not the tiling "anyres" processors).
 *
 * Steps, in Hugging Face's order, reading preprocessor_config.json:
 *   decode      sharp (libvips): PNG, JPEG, WebP, GIF (first frame), TIFF, AVIF…; EXIF orientation applied
 *               (as transformers' `load_image` does with exif_transpose); output sRGB 8-bit
 *   RGB         always 3 channels: grey is replicated, alpha is dropped without compositing — what PIL's
 *               `convert("RGB")` does for `do_convert_rgb` (and transformers.js' `rgb()`)
 *   resize      `do_resize` (default: when `size` is set) to `size`: {height, width}, or {shortest_edge}
 *               (aspect kept, long side truncated as `int(short_edge · long / short)`, capped by an
 *               optional `longest_edge`), or a bare number as shortest_edge; `resample` is a PIL code
 *               (0 nearest, 1 lanczos, 2 bilinear (default), 3 bicubic, 4 box, 5 hamming)
 *   crop        `do_center_crop` to `crop_size` ({height, width} or a number), zero-padded when larger
 *   rescale     `do_rescale` (default true) × `rescale_factor` (default 1/255)
 *   normalise   `do_normalize` (default false, as transformers.js) (x − image_mean) / image_std
 *   layout      HWC → CHW, batch of one
 * Arithmetic copies numpy's float32 steps (rescale in float64 then float32; normalise in float32).
 *
 * Resampling is a port of Pillow's (./pil-resize.ts): it equals Python transformers' output. The
 * 'sharp-affine' resampler instead reproduces transformers.js (Node), which resizes with libvips'
 * affine transform — no anti-aliasing when shrinking — so a run can be compared with it bit for bit.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type OutputInfo } from 'sharp';
import { fail } from '../../errors.js';
import { readJsonFile } from '../../formats/json-file.js';
import { checkKeys } from './families/keys.js';
import { pilResize, type Image8, type PilResample } from './pil-resize.js';

export type SizeSpec = number | { readonly height: number; readonly width: number } | { readonly shortest_edge: number; readonly longest_edge?: number };

/** The preprocessor_config.json fields this reads (for the others see checkGenericKeys). */
export interface ImageProcessorConfig {
  readonly do_resize?: boolean;
  readonly size?: SizeSpec;
  readonly resample?: number;
  readonly do_center_crop?: boolean;
  readonly crop_size?: number | { readonly height: number; readonly width: number };
  readonly do_rescale?: boolean;
  readonly rescale_factor?: number;
  readonly do_normalize?: boolean;
  readonly image_mean?: number | readonly number[];
  readonly image_std?: number | readonly number[];
  readonly do_convert_rgb?: boolean;
}

export interface PixelValues {
  readonly data: Float32Array;
  readonly dims: readonly [1, 3, number, number];
}

export type Resampler = 'pillow' | 'sharp-affine';

interface Plan {
  readonly resize?: (w: number, h: number) => readonly [number, number];
  readonly resample: PilResample;
  readonly crop?: readonly [number, number]; // width, height
  readonly scale?: number;
  readonly mean?: readonly number[];
  readonly std?: readonly number[];
}

const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;

/** Checks the config and reports every problem at once (E_PREPROCESSOR). */
function plan(cfg: ImageProcessorConfig, where: string): Plan {
  const issues: string[] = [];
  const size = cfg.size as Record<string, unknown> | number | undefined;
  let resize: Plan['resize'];
  if (cfg.do_resize ?? size !== undefined) {
    if (typeof size === 'number' && posInt(size)) resize = shortestEdge(size);
    else if (size && typeof size === 'object' && posInt(size.height) && posInt(size.width)) {
      const [w, h] = [size.width as number, size.height as number];
      resize = () => [w, h];
    } else if (size && typeof size === 'object' && posInt(size.shortest_edge) && (size.longest_edge === undefined || posInt(size.longest_edge)))
      resize = shortestEdge(size.shortest_edge as number, size.longest_edge as number | undefined);
    else issues.push(`size: expected {height, width}, {shortest_edge[, longest_edge]} or a positive integer, got ${JSON.stringify(size)}`);
  }
  const resample = cfg.resample ?? 2;
  if (!Number.isInteger(resample) || resample < 0 || resample > 5) issues.push(`resample: expected a PIL code 0..5, got ${resample}`);
  let crop: Plan['crop'];
  if (cfg.do_center_crop) {
    const c = cfg.crop_size as Record<string, unknown> | number | undefined;
    if (typeof c === 'number' && posInt(c)) crop = [c, c];
    else if (c && typeof c === 'object' && posInt(c.height) && posInt(c.width)) crop = [c.width as number, c.height as number];
    else issues.push(`crop_size: expected {height, width} or a positive integer, got ${JSON.stringify(c)}`);
  }
  const scale = (cfg.do_rescale ?? true) ? (cfg.rescale_factor ?? 1 / 255) : undefined;
  if (scale !== undefined && !Number.isFinite(scale)) issues.push(`rescale_factor: expected a number, got ${scale}`);
  const triple = (v: unknown, name: string) => {
    const xs = typeof v === 'number' ? [v, v, v] : v;
    if (Array.isArray(xs) && xs.length === 3 && xs.every(Number.isFinite)) return xs as number[];
    issues.push(`${name}: expected a number or 3 numbers, got ${JSON.stringify(v)}`);
    return undefined;
  };
  const mean = cfg.do_normalize ? triple(cfg.image_mean, 'image_mean') : undefined;
  const std = cfg.do_normalize ? triple(cfg.image_std, 'image_std') : undefined;
  if (std?.some((s) => s === 0)) issues.push('image_std: must not be 0');
  if (issues.length) throw fail('E_PREPROCESSOR', `${where}: ${issues.length} problem(s) in the image processor config`, { file: where, notes: issues });
  return { resize, resample: resample as PilResample, crop, scale, mean, std };
}

/** transformers' get_resize_output_image_size(default_to_square=False, max_size=longest_edge). */
function shortestEdge(short: number, longest?: number) {
  return (w: number, h: number): readonly [number, number] => {
    const [s, l] = w <= h ? [w, h] : [h, w];
    let [ns, nl] = [short, Math.trunc((short * l) / s)];
    if (longest !== undefined && nl > longest) [ns, nl] = [Math.trunc((longest * ns) / nl), longest];
    return w <= h ? [ns, nl] : [nl, ns];
  };
}

/** Decodes an image file or buffer to 8-bit RGB, EXIF orientation applied. Not an image → E_IMAGE. */
export async function decodeImage(input: string | Uint8Array): Promise<Image8> {
  const name = typeof input === 'string' ? input : '<image buffer>';
  let bytes: Uint8Array;
  try {
    bytes = typeof input === 'string' ? await readFile(input) : input;
  } catch (e) {
    throw fail('E_IMAGE', `${name}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file: name }, e);
  }
  let raw: { data: Buffer; info: OutputInfo };
  try {
    // sharp's raw output is sRGB 8-bit (grey, CMYK and 16-bit inputs converted); alpha stays a 4th channel.
    raw = await sharp(bytes).rotate().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw fail('E_IMAGE', `${name}: not a readable image (${(e as Error).message})`, {
      file: name, hint: 'use a PNG, JPEG, WebP, GIF, TIFF or AVIF file',
    }, e);
  }
  const { width, height, channels } = raw.info;
  const rgb = new Uint8Array(width * height * 3);
  const src = raw.data;
  for (let p = 0, i = 0; p < width * height; p++, i += channels) {
    // 1 or 2 channels: grey (+ alpha) replicated; 3 or 4: RGB (+ alpha); alpha is dropped, as PIL does.
    const grey = channels < 3;
    rgb[p * 3] = src[i];
    rgb[p * 3 + 1] = src[grey ? i : i + 1];
    rgb[p * 3 + 2] = src[grey ? i : i + 2];
  }
  return { data: rgb, width, height, channels: 3 };
}

/**
 * HF `center_crop`: output (x, y) is input (x + ⌊(W − cw) / 2⌋, y + ⌊(H − ch) / 2⌋), zero outside — which
 * is what its pad-then-crop does when the crop is larger (transformers.js pads ⌊⌋ rather than ⌈⌉ on the
 * left/top, one pixel apart from this when the padding is odd).
 */
function centerCrop(img: Image8, cw: number, ch: number): Image8 {
  if (img.width === cw && img.height === ch) return img;
  const ox = Math.floor((img.width - cw) / 2), oy = Math.floor((img.height - ch) / 2);
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) {
    const sy = y + oy;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -ox), x1 = Math.min(cw, img.width - ox);
    if (x1 > x0) out.set(img.data.subarray((sy * img.width + x0 + ox) * 3, (sy * img.width + x1 + ox) * 3), (y * cw + x0) * 3);
  }
  return { data: out, width: cw, height: ch, channels: 3 };
}

const AFFINE_INTERPOLATOR: Record<PilResample, 'nearest' | 'bilinear' | 'bicubic' | 'lanczos'> = {
  0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'bilinear', 5: 'bilinear',
};

/** transformers.js' RawImage.resize on Node: libvips affine (lanczos: libvips resize with lanczos3). */
export async function sharpAffineResize(img: Image8, w: number, h: number, resample: PilResample): Promise<Image8> {
  let s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  const interp = AFFINE_INTERPOLATOR[resample];
  s = interp === 'lanczos'
    ? s.resize({ width: w, height: h, fit: 'fill', kernel: 'lanczos3' })
    : s.affine([w / img.width, 0, 0, h / img.height], { interpolator: interp });
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  if (info.width !== w || info.height !== h || info.channels !== 3)
    throw fail('E_IMAGE', `affine resize gave ${info.width}x${info.height}x${info.channels}, expected ${w}x${h}x3`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: w, height: h, channels: 3 };
}

/** Resizes 8-bit RGB with the chosen resampler (Pillow's filters by default); same size → unchanged. */
export async function resizeImage(img: Image8, w: number, h: number, resample: PilResample, resampler: Resampler = 'pillow'): Promise<Image8> {
  if (w === img.width && h === img.height) return img;
  return resampler === 'sharp-affine' ? sharpAffineResize(img, w, h, resample) : pilResize(img, w, h, resample);
}

/** Resize, crop, rescale, normalise and lay out an already decoded RGB image. */
export async function preprocessDecoded(
  img: Image8, cfg: ImageProcessorConfig, opts: { resampler?: Resampler; configFile?: string } = {},
): Promise<PixelValues> {
  const p = plan(cfg, opts.configFile ?? '<image processor config>');
  if (p.resize) {
    const [w, h] = p.resize(img.width, img.height);
    img = await resizeImage(img, w, h, p.resample, opts.resampler);
  }
  if (p.crop) img = centerCrop(img, p.crop[0], p.crop[1]);
  const { width: W, height: H } = img;
  const plane = W * H;
  const out = new Float32Array(3 * plane);
  const f = Math.fround;
  const mean = p.mean?.map(f), std = p.std?.map(f);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      let v = img.data[i * 3 + c];
      if (p.scale !== undefined) v = f(v * p.scale);
      if (mean && std) v = f(f(v - mean[c]) / std[c]);
      out[c * plane + i] = v;
    }
  }
  return { data: out, dims: [1, 3, H, W] };
}

/** Image file or encoded bytes → pixel_values [1, 3, H, W]. */
export async function preprocessImage(
  input: string | Uint8Array, cfg: ImageProcessorConfig, opts: { resampler?: Resampler; configFile?: string } = {},
): Promise<PixelValues> {
  plan(cfg, opts.configFile ?? '<image processor config>'); // a bad config is reported before decoding
  return preprocessDecoded(await decodeImage(input), cfg, opts);
}

/** Checks a config by image.ts' rules (every problem at once, E_PREPROCESSOR) without an image. */
export function checkImageProcessorConfig(cfg: ImageProcessorConfig, where: string): void {
  plan(cfg, where);
}

/** The preprocessor_config.json keys this module honours. */
export const GENERIC_KEYS = ['do_resize', 'size', 'resample', 'do_center_crop', 'crop_size', 'do_rescale', 'rescale_factor', 'do_normalize', 'image_mean', 'image_std'] as const;

/**
 * The key rule (families/keys.ts) for a config this module preprocesses: an output-changing key it does
 * not implement (do_image_splitting, image_grid_pinpoints, min_pixels…) → E_PREPROCESSOR_UNSUPPORTED;
 * other unread keys → notices. A config naming a family goes to families/index.ts instead.
 */
export function checkGenericKeys(cfg: Readonly<Record<string, unknown>>, where: string): string[] {
  return checkKeys(cfg, where, 'CLIP / SigLIP-style', GENERIC_KEYS);
}

/** Reads `preprocessor_config.json` from a model folder. */
export async function loadImageProcessorConfig(dir: string): Promise<ImageProcessorConfig> {
  const file = join(dir, 'preprocessor_config.json');
  const raw = await readJsonFile(file, 'E_PREPROCESSOR');
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw fail('E_PREPROCESSOR', `${file}: expected a JSON object`, { file });
  plan(raw as ImageProcessorConfig, file);
  return raw as ImageProcessorConfig;
}
