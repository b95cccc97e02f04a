/**
 * Qwen2-VL / Qwen2.5-VL (`Qwen2VLImageProcessor`, `Qwen2VLProcessor`) and the 3-D mRoPE position ids.
 *
 * Pixels (Python transformers' image_processing_qwen2_vl, transformers.js' port):
 *   smart_resize   H, W → multiples of factor = patch_size · merge_size, aspect kept, H·W within
 *                  [min_pixels, max_pixels] (`min_pixels`/`max_pixels`, else size.shortest_edge /
 *                  size.longest_edge); resample default bicubic. Rounding is Python's `round` (ties to
 *                  even; transformers.js' Math.round rounds ties up: a 70-pixel side at factor 28 gives
 *                  56 here and in Python, 84 in transformers.js). A side under `factor` is first scaled up
 *                  to it, as transformers.js does (older Python raised).
 *   rescale, normalise (CLIP statistics by default), then one image is repeated temporal_patch_size
 *   times and cut into patches:
 *   pixel_values   [grid_t·grid_h·grid_w, C·temporal_patch_size·patch_size²] float32, rows ordered by
 *                  (block row, block column, row in block, column in block) for merge_size² blocks
 *   image_grid_thw [1, 3] int64 = [1, H / patch_size, W / patch_size]
 *   tokens         grid_t·grid_h·grid_w / merge_size² `<|image_pad|>` tokens.
 */
import { fail } from '../../../errors.js';
import { checkImageProcessorConfig, resizeImage } from '../image.js';
import { CLIP_MEAN, CLIP_STD, ConfigReader, cat0, f32, i64, toChw } from './common.js';
import type { FamilyConfigs, FamilyImageProcessor, ImageFamily, ProcessedImage } from './types.js';

const IMAGE_PAD = '<|image_pad|>';

/** Python's round(): ties to even (x ≥ 0). */
const roundHalfEven = (x: number) => {
  const r = Math.round(x);
  return x % 1 === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** smart_resize: [height, width] for an image of height × width. */
export function smartResize(height: number, width: number, factor: number, minPixels: number, maxPixels: number): [number, number] {
  if (height < factor || width < factor) {
    const s = Math.max(factor / height, factor / width);
    [height, width] = [Math.round(height * s), Math.round(width * s)];
  }
  if (Math.max(height, width) / Math.min(height, width) > 200)
    throw fail('E_IMAGE', `image ${width}x${height}: aspect ratio over 200, which Qwen2-VL's processor rejects`);
  let h = roundHalfEven(height / factor) * factor, w = roundHalfEven(width / factor) * factor;
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

/** CHW planes [C, H, W] → Qwen's flattened patches [gh·gw, C·T·p·p] (the one image repeated T times). */
export function flattenPatches(chw: Float32Array, C: number, H: number, W: number, p: number, m: number, T: number): Float32Array {
  const gh = H / p, gw = W / p, row = C * T * p * p;
  const out = new Float32Array(gh * gw * row);
  let o = 0;
  for (let bh = 0; bh < gh / m; bh++)
    for (let bw = 0; bw < gw / m; bw++)
      for (let mh = 0; mh < m; mh++)
        for (let mw = 0; mw < m; mw++) {
          const y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
          for (let c = 0; c < C; c++)
            for (let t = 0; t < T; t++)
              for (let py = 0; py < p; py++) {
                const src = c * H * W + (y0 + py) * W + x0;
                out.set(chw.subarray(src, src + p), o);
                o += p;
              }
        }
  return out;
}

export const qwen2VlFamily: ImageFamily = {
  id: 'qwen2-vl',
  imageProcessorTypes: ['Qwen2VLImageProcessor', 'Qwen2VLImageProcessorFast'],
  modelTypes: ['qwen2_vl', 'qwen2_5_vl'],
  reads: ['min_pixels', 'max_pixels', 'size', 'patch_size', 'merge_size', 'temporal_patch_size', 'resample', 'do_resize',
    'do_rescale', 'rescale_factor', 'do_normalize', 'image_mean', 'image_std'],
  create(c: FamilyConfigs): FamilyImageProcessor {
    const r = new ConfigReader(c.preprocessor, c.where);
    const cfg = c.preprocessor;
    const size = (cfg.size ?? {}) as Record<string, unknown>;
    const patch = r.posInt('patch_size', cfg.patch_size, 14);
    const merge = r.posInt('merge_size', cfg.merge_size, 2);
    const temporal = r.posInt('temporal_patch_size', cfg.temporal_patch_size, 2);
    const minPixels = r.posInt('min_pixels', cfg.min_pixels ?? size.shortest_edge, 56 * 56);
    const maxPixels = r.posInt('max_pixels', cfg.max_pixels ?? size.longest_edge, 28 * 28 * 1280);
    if (minPixels > maxPixels) r.issues.push(`min_pixels ${minPixels} > max_pixels ${maxPixels}`);
    const resample = r.resample(3);
    const doResize = r.bool('do_resize', true);
    const norm = r.norm({ mean: CLIP_MEAN, std: CLIP_STD, normalize: true });
    r.done('Qwen2-VL');
    checkImageProcessorConfig(norm, c.where);
    const factor = patch * merge;
    return {
      family: 'qwen2-vl',
      placeholder: IMAGE_PAD,
      async process(img, opts = {}) {
        const [h, w] = doResize ? smartResize(img.height, img.width, factor, minPixels, maxPixels) : [img.height, img.width];
        if (h % factor || w % factor)
          throw fail('E_IMAGE', `image ${img.width}x${img.height}: sides must be multiples of ${factor} when do_resize is false`);
        const chw = await toChw(await resizeImage(img, w, h, resample, opts.resampler), norm);
        const gh = h / patch, gw = w / patch;
        const tokens = (gh * gw) / (merge * merge);
        return {
          tensors: {
            pixel_values: f32(flattenPatches(chw, 3, h, w, patch, merge, temporal), [gh * gw, 3 * temporal * patch * patch]),
            image_grid_thw: i64([1, gh, gw], [1, 3]),
          },
          tokens,
          expansion: IMAGE_PAD.repeat(tokens),
        };
      },
      batch: (images: readonly ProcessedImage[]) => ({
        pixel_values: cat0(images.map((i) => i.tensors.pixel_values)),
        image_grid_thw: cat0(images.map((i) => i.tensors.image_grid_thw)),
      }),
      ropeIndex(ids, images) {
        const grids = images.map((t) => {
          const g = t.image_grid_thw;
          if (!g || g.type !== 'int64' || g.data.length !== 3) throw fail('E_INPUT', 'get_rope_index: an image without its image_grid_thw row');
          return [Number(g.data[0]), Number(g.data[1]), Number(g.data[2])] as const;
        });
        const r = getRopeIndex([ids], grids, ropeTokensFromConfig(c.model));
        return { positions: r.positionIds, delta: r.ropeDeltas[0]! };
      },
    };
  },
};

/** The token ids get_rope_index needs (config.json: image_token_id, video_token_id, vision_start_token_id). */
export interface RopeTokens {
  readonly imageTokenId: number;
  readonly videoTokenId?: number;
  readonly visionStartTokenId: number;
  readonly spatialMergeSize: number; // vision_config.spatial_merge_size
}

/** Reads RopeTokens from config.json. */
export function ropeTokensFromConfig(model: Readonly<Record<string, unknown>>, where = 'config.json'): RopeTokens {
  const r = new ConfigReader(model, where);
  const vision = (model.vision_config ?? {}) as Record<string, unknown>;
  const t = {
    imageTokenId: r.posInt('image_token_id', model.image_token_id),
    videoTokenId: model.video_token_id === undefined ? undefined : r.posInt('video_token_id', model.video_token_id),
    visionStartTokenId: r.posInt('vision_start_token_id', model.vision_start_token_id),
    spatialMergeSize: r.posInt('vision_config.spatial_merge_size', vision.spatial_merge_size, 2),
  };
  r.done('Qwen2-VL model');
  return t;
}

export interface RopeIndex {
  /** [3, batch, seq] int64: temporal, height and width positions (1 where the attention mask is 0). */
  readonly positionIds: BigInt64Array;
  readonly dims: readonly [3, number, number];
  /** Per sequence: max position + 1 − sequence length; decode step k (0-based past length L) uses L + delta. */
  readonly ropeDeltas: readonly number[];
}

/**
 * Qwen2-VL's get_rope_index for prompts with images (Python semantics): text tokens advance all three
 * axes together; an image of grid (t, h, w) after `vision_start` takes positions offset + (t, h/m, w/m)
 * indices; the text after it resumes at max + 1. `grids` are the image_grid_thw rows in prompt order,
 * consumed across the batch. Videos use the same rule with their own grid; only images are handled here.
 */
export function getRopeIndex(
  inputIds: readonly (readonly number[])[], grids: readonly (readonly [number, number, number])[], tok: RopeTokens,
  attentionMask?: readonly (readonly number[])[],
): RopeIndex {
  const B = inputIds.length, L = inputIds[0]?.length ?? 0;
  const pos = new BigInt64Array(3 * B * L).fill(1n);
  const deltas: number[] = [];
  let imageIndex = 0;
  for (let b = 0; b < B; b++) {
    if (inputIds[b].length !== L) throw fail('E_INPUT', `get_rope_index: sequence ${b} has ${inputIds[b].length} ids, expected ${L}`);
    const keep = inputIds[b].map((_, j) => (attentionMask ? attentionMask[b][j] === 1 : true));
    const ids = inputIds[b].filter((_, j) => keep[j]);
    const axes: number[][] = [[], [], []];
    let next = 0; // first position of the next segment (max so far + 1)
    const text = (n: number) => {
      for (let i = 0; i < n; i++) for (const a of axes) a.push(next + i);
      next += n;
    };
    let st = 0;
    const images = ids.filter((x, i) => i > 0 && ids[i - 1] === tok.visionStartTokenId && x === tok.imageTokenId).length;
    for (let k = 0; k < images; k++) {
      const ed = ids.indexOf(tok.imageTokenId, st);
      const g = grids[imageIndex++];
      if (!g) throw fail('E_INPUT', `get_rope_index: the prompt has more images than the ${grids.length} image_grid_thw row(s)`);
      const [t, gh, gw] = [g[0], Math.floor(g[1] / tok.spatialMergeSize), Math.floor(g[2] / tok.spatialMergeSize)];
      text(ed - st);
      let max = next - 1;
      for (let i = 0; i < t * gh * gw; i++) {
        const v = [next + Math.floor(i / (gh * gw)), next + (Math.floor(i / gw) % gh), next + (i % gw)];
        v.forEach((x, a) => axes[a].push(x));
        max = Math.max(max, ...v);
      }
      next = max + 1;
      st = ed + t * gh * gw;
    }
    if (st < ids.length) text(ids.length - st);
    let c = 0;
    for (let j = 0; j < L; j++) {
      if (!keep[j]) continue;
      for (let a = 0; a < 3; a++) pos[(a * B + b) * L + j] = BigInt(axes[a][c]);
      c++;
    }
    deltas.push(Math.max(...axes.flat(), -1) + 1 - L);
  }
  return { positionIds: pos, dims: [3, B, L], ropeDeltas: deltas };
}

/** Position ids [3, batch, 1] for a decode step after `pastLength` tokens: pastLength + delta on every axis. */
export function decodePositionIds(pastLength: number, ropeDeltas: readonly number[]): BigInt64Array {
  const B = ropeDeltas.length;
  return BigInt64Array.from({ length: 3 * B }, (_, i) => BigInt(pastLength + ropeDeltas[i % B]));
}
