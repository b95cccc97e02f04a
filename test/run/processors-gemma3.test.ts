/**
 * Gemma 3 family processor (src/run/inputs/families/gemma3.ts).
 *
 * Oracle: transformers.js 4.3.1 — AutoImageProcessor (Gemma3ImageProcessor) on a folder holding the real
 * google/gemma-3 preprocessor_config.json at its real size, 896 × 896 (test/fixtures/processors/gemma3),
 * and Gemma3Processor for the prompt (a stub tokenizer records the text and carries the real
 * tokenizer_config.json token strings). Compared with the 'sharp-affine' resampler (transformers.js'
 * libvips affine resize); the default Pillow resampler is Python's and differs on resized images.
 * Pan-and-scan: transformers.js 4.3.1 does not implement it (its Gemma3ImageProcessor is the plain
 * processor), and neither does nanomind: do_pan_and_scan = true is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gemma3Processor } from '@huggingface/transformers';
import { loadFamilyProcessor, type FamilyProcessor } from '../../src/run/inputs/families/index.js';
import { code } from '../error-codes.js';
import { maxAbsDiff, modelDir, png, rawImage, removeModelDir, tjsImageProcessor, type TjsTensor } from './processors-helpers.js';

// the three token strings of google/gemma-3-4b-it's tokenizer_config.json
const TOKENS = { boi_token: '<start_of_image>', image_token: '<image_soft_token>', eoi_token: '<end_of_image>' };
let dir: string;
let ours: FamilyProcessor;
let theirs: Awaited<ReturnType<typeof tjsImageProcessor>>;

beforeAll(async () => {
  dir = await modelDir('gemma3', {}, { 'tokenizer_config.json': TOKENS });
  ours = (await loadFamilyProcessor(dir))!;
  theirs = await tjsImageProcessor(dir);
});
afterAll(() => removeModelDir(dir));

describe('Gemma 3 vs transformers.js', () => {
  it('pixel_values match at 896 × 896 (max abs diff ≤ 1e-5), 256 tokens each', async () => {
    expect(ours.family).toBe('gemma3');
    expect(ours.notices).toEqual([]); // every key of the real config is understood
    // landscape, tiny, RGBA needing no resize, grey; portrait and small square in the two-image test below
    const cases: [number, number, 1 | 3 | 4][] = [[1000, 560, 3], [7, 5, 3], [896, 896, 4], [640, 480, 1]];
    for (const [w, h, ch] of cases) {
      const bytes = await png(w, h, ch);
      const mine = await ours.preprocess([bytes], { resampler: 'sharp-affine' });
      const ref = (await theirs(await rawImage(bytes))) as { pixel_values: TjsTensor };
      expect(maxAbsDiff(mine.tensors.pixel_values, ref.pixel_values), `${w}x${h}x${ch}`).toBeLessThanOrEqual(1e-5);
      expect(mine.tokensPerImage).toEqual([256]);
    }
  });

  it('expands <start_of_image> like Gemma3Processor; two images (portrait, small square) stack to [2, 3, 896, 896]', async () => {
    const [a, b] = [await png(300, 500), await png(64, 64, 3, 3)];
    let seen: string[] = [];
    const tokenizer = Object.assign((text: string[]) => ((seen = text), {}), { config: TOKENS });
    const proc = new Gemma3Processor({ image_seq_length: 256 }, { image_processor: theirs, tokenizer } as never, null);
    const prompt = '<start_of_turn>user\nDescribe <start_of_image> and <start_of_image><end_of_turn>';
    const ref = (await proc(prompt, [await rawImage(a), await rawImage(b)])) as { pixel_values: TjsTensor };
    const mine = await ours.preprocess([a, b], { resampler: 'sharp-affine' });
    expect(maxAbsDiff(mine.tensors.pixel_values, ref.pixel_values)).toBeLessThanOrEqual(1e-5);
    expect(mine.expandPrompt(prompt)).toBe(seen[0]);
    expect(seen[0]).toContain(`\n\n<start_of_image>${'<image_soft_token>'.repeat(256)}<end_of_image>\n\n`);
    expect(mine.tensors.pixel_values.dims).toEqual([2, 3, 896, 896]);
  });

  it('refuses do_pan_and_scan = true (E_PREPROCESSOR_UNSUPPORTED); false or null is fine', async () => {
    const on = await modelDir('gemma3', { do_pan_and_scan: true, pan_and_scan_max_num_crops: 4 });
    expect(await code(loadFamilyProcessor(on))).toBe('E_PREPROCESSOR_UNSUPPORTED');
    const off = await modelDir('gemma3', { do_pan_and_scan: false });
    expect((await loadFamilyProcessor(off))!.family).toBe('gemma3');
    await Promise.all([on, off].map(removeModelDir));
  });

  it('picks the family from config.json model_type when the preprocessor config names no type; default tokens', async () => {
    const d = await modelDir('gemma3', { image_processor_type: undefined }, { 'config.json': { model_type: 'gemma3', mm_tokens_per_image: 256 } });
    const p = (await loadFamilyProcessor(d))!;
    expect(p.family).toBe('gemma3');
    expect(p.placeholder).toBe('<start_of_image>');
    await removeModelDir(d);
  });
});
