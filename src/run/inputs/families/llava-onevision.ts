/**
 * LLaVA-OneVision (`LlavaOnevisionImageProcessor`, `LlavaOnevisionProcessor`): "anyres" tiling.
 *
 * Pixels (Python transformers' image_processing_llava_onevision.py; transformers.js 4.3.1 has no anyres —
 * its LlavaOnevisionImageProcessor only resizes to `size`, which is the base patch here):
 *   best resolution   from image_grid_pinpoints ([height, width] pairs): the one keeping the most of the
 *                     image's pixels when scaled to fit, ties → the least padding (select_best_resolution)
 *   patches           the image scaled to fit the best resolution (the long-fitting side exact, the other
 *                     ⌈side·scale⌉), centred on zero padding (the odd pixel after), cut row-major into
 *                     S × S tiles (S = size.height); before them the whole image resized to S × S (the base)
 *   rescale, normalise
 *   outputs           pixel_values [1, 1 + tiles, 3, S, S] float32, image_sizes [1, 2] int64 [height, width]
 * Tokens per image (LlavaOnevisionProcessor._get_number_of_features): the base image's num_image_tokens
 * plus the tiles' features after unpadding, plus one `image_newline` row each; see numberOfFeatures.
 */
import { fail } from '../../../errors.js';
import { checkImageProcessorConfig, resizeImage } from '../image.js';
import type { Image8 } from '../pil-resize.js';
import { CLIP_MEAN, CLIP_STD, ConfigReader, cat0, f32, i64, pyFloorDiv, toChw } from './common.js';
import type { FamilyConfigs, FamilyImageProcessor, ImageFamily, ProcessedImage, TensorLike } from './types.js';

export type Resolution = readonly [height: number, width: number];

/** select_best_resolution: the pinpoint [h, w] that keeps the most image pixels, then wastes the fewest. */
export function selectBestResolution(height: number, width: number, pinpoints: readonly Resolution[]): Resolution {
  let best = pinpoints[0], maxEffective = 0, minWasted = Infinity;
  for (const [h, w] of pinpoints) {
    const scale = Math.min(w / width, h / height);
    const effective = Math.min(Math.trunc(width * scale) * Math.trunc(height * scale), width * height);
    const wasted = w * h - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) [maxEffective, minWasted, best] = [effective, wasted, [h, w]];
  }
  return best;
}

/** get_patch_output_size: [height, width] of the image scaled to fit `target` before padding. */
export function patchOutputSize(height: number, width: number, [th, tw]: Resolution): [number, number] {
  const sw = tw / width, sh = th / height;
  return sw < sh ? [Math.min(Math.ceil(height * sw), th), tw] : [th, Math.min(Math.ceil(width * sh), tw)];
}

/** Python's int(round(x, 7)) for x ≥ 0 (the 7-digit rounding keeps 23.9999999996 from truncating to 23). */
const intRound7 = (x: number) => Math.trunc(Math.round(x * 1e7) / 1e7);

/**
 * LlavaOnevisionProcessor._get_number_of_features: image tokens for an image of height × width.
 * The tiles form a grid of (best_h / S) × (best_w / S) tiles of √num_image_tokens features per side; the
 * rows / columns that are padding are cut off (unpad), a grid bigger than max_num_patches (anyres_max_N)
 * tiles' worth is scaled down, every remaining row gets an image_newline, and the base image adds
 * num_image_tokens. 'default' feature selection drops one (the CLS token).
 */
export function numberOfFeatures(
  height: number, width: number,
  o: { pinpoints: readonly Resolution[]; tileSize: number; numImageTokens: number; maxNumPatches: number; selectStrategy: string },
): number {
  const [bh, bw] = selectBestResolution(height, width, o.pinpoints);
  const side = Math.trunc(Math.sqrt(o.numImageTokens));
  let ch = side * Math.trunc(bh / o.tileSize), cw = side * Math.trunc(bw / o.tileSize);
  if (width / height > cw / ch) ch -= 2 * Math.trunc((ch - intRound7(height * (cw / width))) / 2);
  else cw -= 2 * Math.trunc((cw - intRound7(width * (ch / height))) / 2);
  let unpadded = ch * cw, newline = ch;
  const ratio = Math.sqrt((ch * cw) / (o.maxNumPatches * side * side));
  if (ratio > 1.1) {
    // Python's int(h // ratio): float floor division, which differs from trunc(h / ratio) when the quotient
    // rounds up to a whole number (50 // 1.1111111111111112 is 44, 50 / 1.1111111111111112 is 45.0).
    unpadded = pyFloorDiv(ch, ratio) * pyFloorDiv(cw, ratio);
    newline = pyFloorDiv(ch, ratio);
  }
  return unpadded + newline + o.numImageTokens - (o.selectStrategy === 'default' ? 1 : 0);
}

/** Pastes `img` centred on a zero canvas of w × h (divmod: the odd pixel goes after). */
function padCentred(img: Image8, w: number, h: number): Image8 {
  const x0 = Math.trunc((w - img.width) / 2), y0 = Math.trunc((h - img.height) / 2);
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < img.height; y++) out.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + y0) * w + x0) * 3);
  return { data: out, width: w, height: h, channels: 3 };
}

export const llavaOnevisionFamily: ImageFamily = {
  id: 'llava-onevision',
  imageProcessorTypes: ['LlavaOnevisionImageProcessor', 'LlavaOnevisionImageProcessorFast'],
  modelTypes: ['llava_onevision'],
  reads: ['size', 'image_grid_pinpoints', 'resample', 'do_resize', 'do_rescale', 'rescale_factor', 'do_normalize', 'image_mean',
    'image_std', 'do_pad'],
  create(c: FamilyConfigs): FamilyImageProcessor {
    const r = new ConfigReader(c.preprocessor, c.where);
    const cfg = c.preprocessor;
    const size = (cfg.size ?? { height: 384, width: 384 }) as Record<string, unknown>;
    const S = r.posInt('size.height', size.height);
    if (size.width !== S) r.issues.push(`size: anyres tiles are square, got ${JSON.stringify(size)}`);
    const pins = cfg.image_grid_pinpoints;
    const pinpoints: Resolution[] = [];
    if (!Array.isArray(pins) || !pins.length) r.issues.push(`image_grid_pinpoints: expected a list of [height, width], got ${JSON.stringify(pins)}`);
    else for (const p of pins as unknown[]) {
      if (Array.isArray(p) && p.length === 2 && p.every((v) => Number.isInteger(v) && v > 0 && v % S === 0)) pinpoints.push([p[0], p[1]]);
      else r.issues.push(`image_grid_pinpoints: ${JSON.stringify(p)} is not [height, width] in multiples of ${S}`);
    }
    const resample = r.resample(3);
    if (!r.bool('do_resize', true)) r.issues.push('do_resize: false is not supported (anyres always resizes)');
    r.bool('do_pad', true); // pads several images to the same patch count (batch); one image needs none
    const norm = r.norm({ mean: CLIP_MEAN, std: CLIP_STD, normalize: true });
    const p = new ConfigReader(c.processor, c.where.replace(/preprocessor_config\.json$/, 'processor_config.json'));
    const numImageTokens = p.posInt('num_image_tokens', c.processor.num_image_tokens, 729);
    const aspect = String(c.processor.vision_aspect_ratio ?? 'anyres_max_9');
    const maxNumPatches = /^anyres_max_(\d+)$/.exec(aspect)?.[1];
    if (!maxNumPatches) p.issues.push(`vision_aspect_ratio: expected anyres_max_N, got ${JSON.stringify(aspect)}`);
    const selectStrategy = String(c.processor.vision_feature_select_strategy ?? 'full');
    if (selectStrategy !== 'full' && selectStrategy !== 'default') p.issues.push(`vision_feature_select_strategy: expected "full" or "default", got ${JSON.stringify(selectStrategy)}`);
    const imageToken = String(c.processor.image_token ?? '<image>');
    r.issues.push(...p.issues);
    r.done('LLaVA-OneVision');
    checkImageProcessorConfig(norm, c.where);
    const counts = { pinpoints, tileSize: S, numImageTokens, maxNumPatches: Number(maxNumPatches), selectStrategy };
    return {
      family: 'llava-onevision',
      placeholder: imageToken,
      async process(img, opts = {}) {
        const best = selectBestResolution(img.height, img.width, pinpoints);
        const [nh, nw] = patchOutputSize(img.height, img.width, best);
        const padded = padCentred(await resizeImage(img, nw, nh, resample, opts.resampler), best[1], best[0]);
        const parts = [await resizeImage(img, S, S, resample, opts.resampler)];
        for (let y = 0; y < best[0]; y += S) for (let x = 0; x < best[1]; x += S) {
          const tile = new Uint8Array(S * S * 3);
          for (let row = 0; row < S; row++) tile.set(padded.data.subarray(((y + row) * best[1] + x) * 3, ((y + row) * best[1] + x + S) * 3), row * S * 3);
          parts.push({ data: tile, width: S, height: S, channels: 3 });
        }
        const px = new Float32Array(parts.length * 3 * S * S);
        for (const [i, part] of parts.entries()) px.set(await toChw(part, norm), i * 3 * S * S);
        const tokens = numberOfFeatures(img.height, img.width, counts);
        return {
          tensors: { pixel_values: f32(px, [1, parts.length, 3, S, S]), image_sizes: i64([img.height, img.width], [1, 2]) },
          tokens,
          expansion: imageToken.repeat(tokens),
        };
      },
      batch(images: readonly ProcessedImage[]): Record<string, TensorLike> {
        // Python's _pad_for_batching: zero patches up to the most any image has
        const most = Math.max(...images.map((i) => i.tensors.pixel_values.dims[1]));
        const one = 3 * S * S;
        const px = new Float32Array(images.length * most * one);
        images.forEach((i, k) => px.set(i.tensors.pixel_values.data as Float32Array, k * most * one));
        if (images.some((i) => i.tensors.pixel_values.type !== 'float32')) throw fail('E_PREPROCESSOR', 'LLaVA-OneVision pixel_values must be float32');
        return { pixel_values: f32(px, [images.length, most, 3, S, S]), image_sizes: cat0(images.map((i) => i.tensors.image_sizes)) };
      },
    };
  },
};
