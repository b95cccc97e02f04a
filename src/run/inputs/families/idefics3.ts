/**
 * Idefics3 / SmolVLM / SmolVLM2 (`Idefics3ImageProcessor`, `SmolVLMImageProcessor`; `Idefics3Processor`).
 *
 * Pixels, in Python transformers' order (image_processing_idefics3.py):
 *   resize      longest edge → size.longest_edge, aspect kept, the other side `int(...)` and made even,
 *               then capped at 4096 (Python's rule; transformers.js floors without the even step — the
 *               two agree whenever the scaled short side is an even integer)
 *   split       (do_image_splitting, default true) resize to multiples of S = max_image_size.longest_edge
 *               (the long side rounded up, the short side from the aspect ratio rounded up), cut into
 *               rows × cols tiles of S × S, row-major, then the whole image resized to S × S as the
 *               global tile (last); an image already ≤ S is one tile, rows = cols = 0.
 *               Without splitting: resized to S × S, rows = cols = 0.
 *   rescale, normalise ([0.5]·3 by default)
 *   outputs     pixel_values [1, tiles, 3, S, S] float32, pixel_attention_mask [1, tiles, S, S] bool (all
 *               true for one prompt's images: every tile is S × S), rows/cols per image.
 * Resampling: 'pillow' (default) resizes the 8-bit image with Pillow at every step, as Python does
 * (resample default 1, Lanczos). 'sharp-affine' reproduces transformers.js: the first resize with libvips,
 * then the split resizes on the normalised floats with ONNX Resize (linear, half_pixel, no antialias),
 * which is what its `interpolate_4d` runs.
 *
 * Prompt: each `<image>` becomes, for rows × cols tiles,
 *   for each row: (`<fake_token_around_image><row_R_col_C>` + `<image>`·N for each col) + "\n"
 *   then "\n<fake_token_around_image><global-img>" + `<image>`·N + "<fake_token_around_image>"
 * and for an unsplit image `<fake_token_around_image><global-img>` + `<image>`·N + `<fake_token_around_image>`,
 * N = image_seq_len (processor_config.json). Tokens (feature rows) per image: (rows·cols + 1)·N.
 */
import { fail } from '../../../errors.js';
import { checkImageProcessorConfig, resizeImage, type Resampler } from '../image.js';
import type { Image8, PilResample } from '../pil-resize.js';
import { ConfigReader, HALF, cat0, crop8, f32, toChw } from './common.js';
import type { FamilyConfigs, FamilyImageProcessor, ImageFamily, ProcessedImage, TensorLike } from './types.js';

const FAKE = '<fake_token_around_image>', IMAGE = '<image>', GLOBAL = '<global-img>';
const MAX_IMAGE_SIZE = 4096; // Python's cap on the resized image

/** Python's get_resize_output_image_size(resolution_max_side): [height, width]. */
export function resizeLongestEdge(height: number, width: number, longest: number): [number, number] {
  const aspect = width / height;
  if (width >= height) {
    width = longest;
    height = Math.trunc(width / aspect);
    if (height % 2) height++;
  } else {
    height = longest;
    width = Math.trunc(height * aspect);
    if (width % 2) width++;
  }
  [height, width] = [Math.max(height, 1), Math.max(width, 1)];
  // the cap keeps the aspect of the size just computed (Python passes it on), not the original's
  const capped = width / height;
  if (width >= height && width > MAX_IMAGE_SIZE) [width, height] = [MAX_IMAGE_SIZE, Math.trunc(MAX_IMAGE_SIZE / capped)];
  else if (height > width && height > MAX_IMAGE_SIZE) [height, width] = [MAX_IMAGE_SIZE, Math.trunc(MAX_IMAGE_SIZE * capped)];
  return [Math.max(height, 1), Math.max(width, 1)];
}

/** resize_for_vision_encoder: both sides to multiples of S, aspect roughly kept. [height, width]. */
export function visionEncoderSize(height: number, width: number, S: number): [number, number] {
  const aspect = width / height;
  if (width >= height) {
    width = Math.ceil(width / S) * S;
    height = Math.ceil(Math.trunc(width / aspect) / S) * S;
  } else {
    height = Math.ceil(height / S) * S;
    width = Math.ceil(Math.trunc(height * aspect) / S) * S;
  }
  return [height, width];
}

/** The prompt text for one image of rows × cols tiles (0 × 0: not split). */
export function idefics3ImagePrompt(rows: number, cols: number, seqLen: number): string {
  const img = IMAGE.repeat(seqLen);
  if (rows === 0 && cols === 0) return `${FAKE}${GLOBAL}${img}${FAKE}`;
  let s = '';
  for (let r = 1; r <= rows; r++) {
    for (let c = 1; c <= cols; c++) s += `${FAKE}<row_${r}_col_${c}>${img}`;
    s += '\n';
  }
  return `${s}\n${FAKE}${GLOBAL}${img}${FAKE}`;
}

/** ONNX Resize (mode linear, half_pixel, no antialias) of CHW float planes, as transformers.js' interpolate_4d. */
export function resizeLinearHalfPixel(src: Float32Array, C: number, H: number, W: number, oh: number, ow: number): Float32Array {
  const axis = (n: number, o: number) => {
    const lo = new Int32Array(o), hi = new Int32Array(o), wl = new Float32Array(o), wh = new Float32Array(o);
    for (let i = 0; i < o; i++) {
      const x = Math.min(Math.max(((i + 0.5) * n) / o - 0.5, 0), n - 1);
      lo[i] = Math.floor(x);
      hi[i] = Math.min(lo[i] + 1, n - 1);
      // ORT: when both neighbours are the same pixel the two weights are 0.5 each
      [wl[i], wh[i]] = lo[i] === hi[i] ? [0.5, 0.5] : [hi[i] - x, x - lo[i]];
    }
    return { lo, hi, wl, wh };
  };
  const ys = axis(H, oh), xs = axis(W, ow);
  const out = new Float32Array(C * oh * ow);
  for (let c = 0; c < C; c++) {
    const p = c * H * W;
    for (let y = 0; y < oh; y++) {
      const r0 = p + ys.lo[y] * W, r1 = p + ys.hi[y] * W;
      for (let x = 0; x < ow; x++) {
        const [x0, x1] = [xs.lo[x], xs.hi[x]];
        out[(c * oh + y) * ow + x] = ys.wl[y] * (xs.wl[x] * src[r0 + x0] + xs.wh[x] * src[r0 + x1]) + ys.wh[y] * (xs.wl[x] * src[r1 + x0] + xs.wh[x] * src[r1 + x1]);
      }
    }
  }
  return out;
}

function cropChw(src: Float32Array, C: number, H: number, W: number, x: number, y: number, w: number, h: number): Float32Array {
  const out = new Float32Array(C * w * h);
  for (let c = 0; c < C; c++) for (let r = 0; r < h; r++) out.set(src.subarray(c * H * W + (y + r) * W + x, c * H * W + (y + r) * W + x + w), (c * h + r) * w);
  return out;
}

/** The tiles of an image already sized to rows·S × cols·S (row-major), by any crop function. */
function tileOrigins(H: number, W: number, S: number): { rows: number; cols: number; origins: [number, number][] } {
  if (H <= S && W <= S) return { rows: 0, cols: 0, origins: [] };
  const rows = Math.ceil(H / S), cols = Math.ceil(W / S);
  const oh = Math.ceil(H / rows), ow = Math.ceil(W / cols);
  const origins: [number, number][] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) origins.push([r === rows - 1 ? H - oh : r * oh, c === cols - 1 ? W - ow : c * ow]);
  return { rows, cols, origins };
}

interface Settings {
  readonly longest?: number; // undefined: do_resize false
  readonly S: number;
  readonly split: boolean;
  readonly resample: PilResample;
  readonly norm: Parameters<typeof toChw>[1];
  readonly seqLen: number;
}

async function tiles(img: Image8, s: Settings, resampler: Resampler): Promise<{ planes: Float32Array[]; rows: number; cols: number }> {
  const { S } = s;
  if (s.longest !== undefined) {
    const [h, w] = resizeLongestEdge(img.height, img.width, s.longest);
    img = await resizeImage(img, w, h, s.resample, resampler);
  }
  const [H, W] = s.split ? visionEncoderSize(img.height, img.width, S) : [S, S];
  const plane = S * S * 3;
  if (resampler === 'sharp-affine') {
    // transformers.js: normalise first, then resize / cut the float planes
    let chw = await toChw(img, s.norm);
    if (H !== img.height || W !== img.width) chw = resizeLinearHalfPixel(chw, 3, img.height, img.width, H, W);
    if (!s.split) return { planes: [chw], rows: 0, cols: 0 };
    const t = tileOrigins(H, W, S);
    const planes = t.origins.map(([y, x]) => cropChw(chw, 3, H, W, x, y, S, S));
    planes.push(H === S && W === S ? chw : resizeLinearHalfPixel(chw, 3, H, W, S, S));
    if (planes.some((p) => p.length !== plane)) throw fail('E_IMAGE', `Idefics3 tiles of ${W}x${H} are not ${S}x${S}`);
    return { planes, rows: t.rows, cols: t.cols };
  }
  img = await resizeImage(img, W, H, s.resample, 'pillow');
  if (!s.split) return { planes: [await toChw(img, s.norm)], rows: 0, cols: 0 };
  const t = tileOrigins(H, W, S);
  const parts = t.origins.map(([y, x]) => crop8(img, x, y, S, S));
  parts.push(await resizeImage(img, S, S, s.resample, 'pillow'));
  return { planes: await Promise.all(parts.map((p) => toChw(p, s.norm))), rows: t.rows, cols: t.cols };
}

export const idefics3Family: ImageFamily = {
  id: 'idefics3',
  imageProcessorTypes: ['Idefics3ImageProcessor', 'Idefics3ImageProcessorFast', 'SmolVLMImageProcessor', 'SmolVLMImageProcessorFast'],
  modelTypes: ['idefics3', 'smolvlm'],
  reads: ['size', 'max_image_size', 'do_image_splitting', 'do_resize', 'resample', 'do_rescale', 'rescale_factor', 'do_normalize',
    'image_mean', 'image_std', 'do_pad'],
  create(c: FamilyConfigs): FamilyImageProcessor {
    const r = new ConfigReader(c.preprocessor, c.where);
    const cfg = c.preprocessor;
    const size = (cfg.size ?? { longest_edge: 4 * 364 }) as Record<string, unknown>;
    const S = r.posInt('max_image_size.longest_edge', ((cfg.max_image_size ?? { longest_edge: 364 }) as Record<string, unknown>).longest_edge);
    const doResize = r.bool('do_resize', true);
    const longest = doResize ? r.posInt('size.longest_edge', size.longest_edge) : undefined;
    r.bool('do_pad', true); // pads images of one prompt to the same tile count; tiles here are always S × S
    const settings: Settings = {
      longest, S, split: r.bool('do_image_splitting', true), resample: r.resample(1),
      norm: r.norm({ mean: HALF, std: HALF, normalize: true }),
      seqLen: new ConfigReader(c.processor, c.where).posInt('image_seq_len', c.processor.image_seq_len, 169),
    };
    r.done('Idefics3');
    checkImageProcessorConfig(settings.norm, c.where);
    return {
      family: 'idefics3',
      placeholder: IMAGE,
      async process(img, opts = {}) {
        const t = await tiles(img, settings, opts.resampler ?? 'pillow');
        const n = t.planes.length;
        const px = new Float32Array(n * 3 * S * S);
        t.planes.forEach((p, i) => px.set(p, i * 3 * S * S));
        return {
          tensors: {
            pixel_values: f32(px, [1, n, 3, S, S]),
            pixel_attention_mask: { type: 'bool', data: new Uint8Array(n * S * S).fill(1), dims: [1, n, S, S] },
            rows: { type: 'int64', data: BigInt64Array.of(BigInt(t.rows)), dims: [1] },
            cols: { type: 'int64', data: BigInt64Array.of(BigInt(t.cols)), dims: [1] },
          },
          tokens: (t.rows * t.cols + 1) * settings.seqLen,
          expansion: idefics3ImagePrompt(t.rows, t.cols, settings.seqLen),
        };
      },
      batch(images: readonly ProcessedImage[]): Record<string, TensorLike> {
        // one prompt's images: their tiles one after another on the tile axis (batch of one)
        const flat = (k: string) => cat0(images.map((i) => ({ ...i.tensors[k], dims: i.tensors[k].dims.slice(1) }) as TensorLike));
        const px = flat('pixel_values'), mask = flat('pixel_attention_mask');
        return {
          pixel_values: { ...px, dims: [1, ...px.dims] } as TensorLike,
          pixel_attention_mask: { ...mask, dims: [1, ...mask.dims] } as TensorLike,
          rows: cat0(images.map((i) => i.tensors.rows)),
          cols: cat0(images.map((i) => i.tensors.cols)),
        };
      },
    };
  },
};
