/**
 * Idefics3 / SmolVLM family processor (src/run/inputs/families/idefics3.ts).
 *
 * Oracle: transformers.js 4.3.1 — AutoImageProcessor (Idefics3ImageProcessor) and Idefics3Processor (a stub
 * tokenizer records the expanded prompt) on a folder holding the real SmolVLM preprocessor_config.json /
 * processor_config.json (test/fixtures/processors/idefics3) with the sizes made small: tiles of
 * S = max_image_size.longest_edge = 32, size.longest_edge = 64 = 2·S (image_seq_len stays 64).
 * Resampling: compared with the 'sharp-affine' resampler, which reproduces transformers.js (libvips
 * Lanczos for the first resize, then ONNX Resize linear/half_pixel on the normalised floats for the tile
 * and global resizes). The default 'pillow' path resizes the 8-bit image with Pillow Lanczos at every step,
 * as Python does; it agrees in shape (checked) and, on these patterns, within 0.16–0.39 normalised units
 * (measured; the 'sharp-affine' path is within 1.2e-7 of transformers.js).
 * Image sizes are chosen so that Python's longest-edge rule (short side truncated, then made even) and
 * transformers.js' (floored) give the same size; the odd case is checked on its own against Python's value.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Idefics3Processor } from '@huggingface/transformers';
import { loadFamilyProcessor, type FamilyProcessor } from '../../src/run/inputs/families/index.js';
import { idefics3ImagePrompt, resizeLongestEdge, visionEncoderSize } from '../../src/run/inputs/families/idefics3.js';
import { code } from '../error-codes.js';
import { ints, maxAbsDiff, modelDir, png, rawImage, removeModelDir, tjsImageProcessor, type TjsTensor } from './processors-helpers.js';

const SMALL = { max_image_size: { longest_edge: 32 }, size: { longest_edge: 64 } };
let dir: string;
let ours: FamilyProcessor;
let theirs: Awaited<ReturnType<typeof tjsImageProcessor>>;
type Ref = { pixel_values: TjsTensor; pixel_attention_mask: TjsTensor; rows: number[][]; cols: number[][] };

beforeAll(async () => {
  dir = await modelDir('idefics3', SMALL);
  ours = (await loadFamilyProcessor(dir))!;
  theirs = await tjsImageProcessor(dir);
});
afterAll(() => removeModelDir(dir));

// [width, height, channels, rows, cols]: landscape 1×2, portrait 2×2, tiny (enlarged) 2×2, square RGBA (no first
// resize), grey 1×2, large 400×300 → 64×48 → 2×2
const CASES: [number, number, 1 | 3 | 4, number, number][] = [
  [128, 64, 3, 1, 2], [60, 90, 3, 2, 2], [10, 6, 3, 2, 2], [64, 64, 4, 2, 2], [96, 48, 1, 1, 2], [400, 300, 3, 2, 2],
];

describe('Idefics3 pixels vs transformers.js', () => {
  it('pixel_values, pixel_attention_mask, rows / cols and tokens match on six images (max abs diff ≤ 1e-5)', async () => {
    expect(ours.family).toBe('idefics3');
    for (const [w, h, ch, rows, cols] of CASES) {
      const bytes = await png(w, h, ch);
      const mine = await ours.preprocess([bytes], { resampler: 'sharp-affine' });
      const ref = await theirs(await rawImage(bytes), { return_row_col_info: true }) as Ref;
      const name = `${w}x${h}x${ch}`;
      expect(ref.rows, name).toEqual([[rows]]);
      expect(ref.cols, name).toEqual([[cols]]);
      expect(maxAbsDiff(mine.tensors.pixel_values, ref.pixel_values), name).toBeLessThanOrEqual(1e-5);
      expect(ints(mine.tensors.pixel_attention_mask), name).toEqual(ints(ref.pixel_attention_mask));
      expect(mine.tensors.pixel_attention_mask.dims, name).toEqual(ref.pixel_attention_mask.dims);
      expect([ints(mine.tensors.rows), ints(mine.tensors.cols)], name).toEqual([[rows], [cols]]);
      expect(mine.tokensPerImage, name).toEqual([(rows * cols + 1) * 64]);
    }
  });

  it('expands two images in one prompt like Idefics3Processor (tiles concatenated, rows / cols per image)', async () => {
    const [a, b] = [await png(128, 64), await png(60, 90, 3, 5)];
    let seen: string[] = [];
    const tokenizer = (text: string[]) => ((seen = text), {});
    const proc = new Idefics3Processor({ image_seq_len: 64 }, { image_processor: theirs, tokenizer } as never, null);
    const prompt = 'User:<image>and<image>Compare them.';
    const ref = await proc(prompt, [await rawImage(a), await rawImage(b)]) as Ref;
    const mine = await ours.preprocess([a, b], { resampler: 'sharp-affine' });
    expect(mine.expandPrompt(prompt)).toBe(seen[0]);
    expect(maxAbsDiff(mine.tensors.pixel_values, ref.pixel_values)).toBeLessThanOrEqual(1e-5);
    expect(ints(mine.tensors.rows)).toEqual(ref.rows[0]);
    expect(ints(mine.tensors.cols)).toEqual(ref.cols[0]);
    expect(mine.tokensPerImage).toEqual([3 * 64, 5 * 64]);
    expect(seen[0].split('<image>').length - 1).toBe(8 * 64); // 8 tiles of 64 (the 2 placeholders replaced)
  });

  it('without do_image_splitting: one S × S image, rows = cols = 0, the single-image prompt', async () => {
    const d = await modelDir('idefics3', { ...SMALL, do_image_splitting: false });
    const [p, ref] = [(await loadFamilyProcessor(d))!, await tjsImageProcessor(d)];
    const bytes = await png(100, 70);
    const mine = await p.preprocess([bytes], { resampler: 'sharp-affine' });
    const r = await ref(await rawImage(bytes), { return_row_col_info: true }) as Ref;
    expect(mine.tensors.pixel_values.dims).toEqual([1, 1, 3, 32, 32]);
    expect(maxAbsDiff(mine.tensors.pixel_values, r.pixel_values)).toBeLessThanOrEqual(1e-5);
    expect(r.rows).toEqual([[0]]);
    expect(mine.expandPrompt('<image>')).toBe(idefics3ImagePrompt(0, 0, 64));
    expect(idefics3ImagePrompt(0, 0, 2)).toBe('<fake_token_around_image><global-img><image><image><fake_token_around_image>');
    await removeModelDir(d);
  });

  it("uses Python's longest-edge rule (short side made even) and tile sizes", () => {
    // Python: width 64, height int(64 / (100 / 37)) = int(23.68) = 23 → odd → 24 (transformers.js: 23)
    expect(resizeLongestEdge(37, 100, 64)).toEqual([24, 64]);
    // 100×5000 at 8192: 8192 × int(163.84) = 163 → 164; then the 4096 cap keeps 164 / 8192: int(82.0) = 82
    expect(resizeLongestEdge(5000, 100, 8192)).toEqual([4096, 82]);
  });

  it('the default Pillow path gives the same shapes (values differ: Lanczos on 8-bit vs bilinear on floats)', async () => {
    const bytes = await png(400, 300);
    const pil = await ours.preprocess([bytes]);
    const ref = await theirs(await rawImage(bytes)) as Ref;
    const d = maxAbsDiff(pil.tensors.pixel_values, ref.pixel_values);
    expect(d).toBeGreaterThan(0); // a different resampling chain, not the same code path
    expect(d).toBeLessThan(1.5); // measured: see the header
    expect(visionEncoderSize(48, 64, 32)).toEqual([64, 64]);
  });

  it('refuses what it does not implement and reports unknown keys', async () => {
    const bad = await modelDir('idefics3', { ...SMALL, image_grid_pinpoints: [[64, 64]] });
    expect(await code(loadFamilyProcessor(bad))).toBe('E_PREPROCESSOR_UNSUPPORTED');
    const smolvlm2 = await modelDir('idefics3', { ...SMALL, image_processor_type: 'SmolVLMImageProcessor', video_sampling: { fps: 1 } });
    const p = (await loadFamilyProcessor(smolvlm2))!;
    expect(p.family).toBe('idefics3');
    expect(p.notices).toHaveLength(1);
    await Promise.all([bad, smolvlm2].map(removeModelDir));
  });
});
