/**
 * LLaVA-OneVision family processor (src/run/inputs/families/llava-onevision.ts): anyres tiling.
 *
 * Oracles. transformers.js 4.3.1 has no anyres: its LlavaOnevisionImageProcessor only resizes to `size`.
 *  - The base patch (patch 0) is compared with that processor (AutoImageProcessor on a folder holding the
 *    real llava-onevision-qwen2-0.5b-ov preprocessor_config.json, test/fixtures/processors/llava-onevision,
 *    with size 16 and pinpoints the same 3 × 3-tile grid scaled to 16), max abs diff ≤ 1e-5.
 *  - The tiles are compared with tiles built here from transformers.js primitives (RawImage.resize — the
 *    same libvips resize — a zero canvas, RawImage.crop, and its plain ImageProcessor for rescale +
 *    normalise), placed at the geometry Python gives: the best resolution and the fitted size per image are
 *    literals printed by a python3 transcription of transformers' select_best_resolution /
 *    get_patch_output_size.
 *  - Feature counts are literals from a python3 transcription of LlavaOnevisionProcessor._get_number_of_features
 *    (real config: 384-pixel tiles, 729 tokens, the 6 × 6 pinpoint grid, anyres_max_9).
 * Resampling: everything compared uses the 'sharp-affine' resampler (transformers.js'); Pillow is the default.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageProcessor, RawImage } from '@huggingface/transformers';
import { loadFamilyProcessor, type FamilyProcessor } from '../../src/run/inputs/families/index.js';
import { numberOfFeatures, selectBestResolution, type Resolution } from '../../src/run/inputs/families/llava-onevision.js';
import { code } from '../error-codes.js';
import { FIXTURES, ints, maxAbsDiff, modelDir, png, rawImage, removeModelDir, tjsImageProcessor, type TjsTensor } from './processors-helpers.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const S = 16;
const PINS = [1, 2, 3].flatMap((i) => [1, 2, 3].map((j) => [S * i, S * j]));
let dir: string;
let ours: FamilyProcessor;
let base: Awaited<ReturnType<typeof tjsImageProcessor>>;
const normalise = new ImageProcessor({ do_rescale: true, rescale_factor: 1 / 255, do_normalize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] } as never);

beforeAll(async () => {
  dir = await modelDir('llava-onevision', { size: { height: S, width: S }, image_grid_pinpoints: PINS });
  ours = (await loadFamilyProcessor(dir))!;
  base = await tjsImageProcessor(dir);
});
afterAll(() => removeModelDir(dir));

// [width, height, channels, best [h, w], fitted [h, w], tokens (729 per tile, 3 × 3 grid)] — python3 transcription
const CASES: [number, number, 1 | 3 | 4, Resolution, Resolution, number][] = [
  [32, 16, 3, [16, 32], [16, 32], 2214], // exact fit: no resize, no padding
  [40, 24, 3, [32, 48], [29, 48], 4665], // fitted to 48 wide, 3 rows of padding (1 before, 2 after)
  [5, 3, 3, [16, 16], [10, 16], 1205], // tiny
  [300, 200, 3, [32, 48], [32, 48], 5157], // large
  [20, 36, 4, [48, 32], [48, 27], 4536], // portrait RGBA
  [48, 30, 1, [32, 48], [30, 48], 4829], // grey
];

/** The expected patches from transformers.js primitives: base from its processor, tiles from resize + pad + crop. */
async function expected(bytes: Uint8Array, best: Resolution, fitted: Resolution): Promise<Float32Array> {
  const img = (await rawImage(bytes)).rgb();
  const resized = await img.resize(fitted[1], fitted[0], { resample: 3 });
  const canvas = new Uint8ClampedArray(best[0] * best[1] * 3);
  const [y0, x0] = [Math.floor((best[0] - fitted[0]) / 2), Math.floor((best[1] - fitted[1]) / 2)];
  for (let y = 0; y < fitted[0]; y++) canvas.set(resized.data.subarray(y * fitted[1] * 3, (y + 1) * fitted[1] * 3), ((y + y0) * best[1] + x0) * 3);
  const padded = new RawImage(canvas, best[1], best[0], 3);
  const parts = [((await base(img)) as { pixel_values: TjsTensor }).pixel_values.data as Float32Array];
  for (let y = 0; y < best[0]; y += S)
    for (let x = 0; x < best[1]; x += S) {
      const tile = await padded.crop([x, y, x + S - 1, y + S - 1]);
      parts.push(((await normalise(tile)) as { pixel_values: TjsTensor }).pixel_values.data as Float32Array);
    }
  const out = new Float32Array(parts.length * 3 * S * S);
  parts.forEach((p, i) => out.set(p, i * 3 * S * S));
  return out;
}

describe('LLaVA-OneVision anyres', () => {
  it('pixel_values (base + tiles), image_sizes and tokens match on six images (max abs diff ≤ 1e-5)', async () => {
    expect(ours.family).toBe('llava-onevision');
    for (const [w, h, ch, best, fitted, tokens] of CASES) {
      const name = `${w}x${h}x${ch}`;
      expect(selectBestResolution(h, w, PINS as unknown as Resolution[]), name).toEqual(best);
      const bytes = await png(w, h, ch);
      const mine = await ours.preprocess([bytes], { resampler: 'sharp-affine' });
      const n = 1 + (best[0] / S) * (best[1] / S);
      const want = await expected(bytes, best, fitted);
      expect(maxAbsDiff(mine.tensors.pixel_values, { data: want, dims: [1, n, 3, S, S] }), name).toBeLessThanOrEqual(1e-5);
      // the base patch alone against transformers.js' own processor output
      const ref = (await base(await rawImage(bytes))) as { pixel_values: TjsTensor };
      expect(maxAbsDiff({ type: 'float32', data: (mine.tensors.pixel_values.data as Float32Array).subarray(0, 3 * S * S), dims: [1, 3, S, S] }, ref.pixel_values), name).toBeLessThanOrEqual(1e-5);
      expect(ints(mine.tensors.image_sizes), name).toEqual([h, w]);
      expect(mine.tokensPerImage, name).toEqual([tokens]);
    }
  });

  it('counts features like LlavaOnevisionProcessor with the real config (python3 transcription literals)', async () => {
    const pins = JSON.parse(await readFile(join(FIXTURES, 'llava-onevision', 'preprocessor_config.json'), 'utf8')).image_grid_pinpoints as Resolution[];
    const o = { pinpoints: pins, tileSize: 384, numImageTokens: 729, maxNumPatches: 9, selectStrategy: 'full' };
    const want: [number, number, number][] = [[640, 480, 2929], [1920, 1080, 7269], [100, 100, 1485], [384, 384, 1485], [3000, 500, 5130], [500, 3000, 5265], [1153, 944, 8748]];
    for (const [w, h, n] of want) expect(numberOfFeatures(h, w, o), `${w}x${h}`).toBe(n);
    expect(numberOfFeatures(480, 640, { ...o, selectStrategy: 'default' })).toBe(2928);
  });

  it('pads several images of one prompt to the most patches, image_sizes stacked; <image> expanded per image', async () => {
    const [a, b] = [await png(32, 16), await png(40, 24)];
    const two = await ours.preprocess([a, b], { resampler: 'sharp-affine' });
    expect(two.tensors.pixel_values.dims).toEqual([2, 7, 3, S, S]);
    const px = two.tensors.pixel_values.data as Float32Array, one = 3 * S * S;
    expect(px.subarray(3 * one, 7 * one).every((v) => v === 0)).toBe(true); // image a has 3 patches, then zeros
    expect(ints(two.tensors.image_sizes)).toEqual([16, 32, 24, 40]);
    expect(two.expandPrompt('<image>\n<image>hi')).toBe(`${'<image>'.repeat(2214)}\n${'<image>'.repeat(4665)}hi`);
  });

  it('refuses configs it cannot honour', async () => {
    const splitting = await modelDir('llava-onevision', { do_image_splitting: true });
    expect(await code(loadFamilyProcessor(splitting))).toBe('E_PREPROCESSOR_UNSUPPORTED');
    const pins = await modelDir('llava-onevision', { image_grid_pinpoints: [[384, 500]] });
    expect(await code(loadFamilyProcessor(pins))).toBe('E_PREPROCESSOR');
    await Promise.all([splitting, pins].map(removeModelDir));
  });
});
