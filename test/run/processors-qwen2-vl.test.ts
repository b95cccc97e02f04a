/**
 * Qwen2-VL family processor (src/run/inputs/families/qwen2-vl.ts).
 *
 * Oracle: transformers.js 4.3.1 — its AutoImageProcessor (Qwen2VLImageProcessor) on a folder holding the
 * real Qwen2-VL preprocessor_config.json (test/fixtures/processors/qwen2-vl) with max_pixels made small,
 * its Qwen2VLProcessor (for the prompt expansion; a stub tokenizer only records the text) and its
 * Qwen2VLForConditionalGeneration.get_rope_index (called on a bare object holding the config).
 * Resampling: the comparisons use the 'sharp-affine' resampler (transformers.js' own libvips resize);
 * the default Pillow resampler (Python's) differs from it — measured on these textured patterns: 0.27–0.9
 * normalised units when shrinking a little, 2.46 for 300×200 → 224×168 (transformers.js' libvips affine
 * does not anti-alias; see test/run/inputs-image.test.ts), 0 when no resize is needed (56×84). Image sizes avoid smart_resize
 * ties (side/28 = k + ½), where Python's round (kept here) and transformers.js' Math.round differ — the
 * tie case is checked on its own against Python's value.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Tensor } from '@huggingface/transformers';
import { loadFamilyProcessor, type FamilyProcessor } from '../../src/run/inputs/families/index.js';
import { decodePositionIds, getRopeIndex, ropeTokensFromConfig, smartResize } from '../../src/run/inputs/families/qwen2-vl.js';
import { code } from '../error-codes.js';
import { ints, maxAbsDiff, modelDir, png, rawImage, removeModelDir, tjsImageProcessor, type TjsTensor } from './processors-helpers.js';

const SMALL = { max_pixels: 28 * 28 * 16, size: { min_pixels: 3136, max_pixels: 28 * 28 * 16 } };
let dir: string;
let ours: FamilyProcessor;
let theirs: Awaited<ReturnType<typeof tjsImageProcessor>>;

beforeAll(async () => {
  dir = await modelDir('qwen2-vl', SMALL);
  ours = (await loadFamilyProcessor(dir))!;
  theirs = await tjsImageProcessor(dir);
});
afterAll(() => removeModelDir(dir));

// [width, height, channels]: landscape, portrait, tiny (scaled up first), large (max_pixels), RGBA, grey
const CASES: [number, number, 1 | 3 | 4][] = [[100, 60, 3], [40, 90, 3], [10, 7, 3], [300, 200, 3], [56, 84, 4], [84, 50, 1]];

describe('Qwen2-VL pixels vs transformers.js', () => {
  it('pixel_values, image_grid_thw and tokens per image match on six images (max abs diff ≤ 1e-5)', async () => {
    expect(ours.family).toBe('qwen2-vl');
    for (const [w, h, ch] of CASES) {
      const bytes = await png(w, h, ch);
      const mine = await ours.preprocess([bytes], { resampler: 'sharp-affine' });
      const ref = await theirs(await rawImage(bytes)) as { pixel_values: TjsTensor; image_grid_thw: TjsTensor };
      expect(maxAbsDiff(mine.tensors.pixel_values, ref.pixel_values), `${w}x${h}x${ch}`).toBeLessThanOrEqual(1e-5);
      expect(ints(mine.tensors.image_grid_thw), `${w}x${h}`).toEqual(ints(ref.image_grid_thw));
      const [t, gh, gw] = ints(ref.image_grid_thw);
      expect(mine.tokensPerImage).toEqual([(t * gh * gw) / 4]);
    }
  });

  it('expands <|image_pad|> like Qwen2VLProcessor, and two images concatenate in prompt order', async () => {
    const [a, b] = [await png(100, 60), await png(40, 90, 3, 7)];
    let seen: string[] = [];
    const tokenizer = (text: string[]) => ((seen = text), {});
    const proc = new Qwen2VLProcessor({}, { image_processor: theirs, tokenizer } as never, null);
    const prompt = 'Look: <|vision_start|><|image_pad|><|vision_end|> what is it?';
    await proc(prompt, [await rawImage(a)]);
    const one = await ours.preprocess([a], { resampler: 'sharp-affine' });
    expect(one.expandPrompt(prompt)).toBe(seen[0]);

    const two = await ours.preprocess([a, b], { resampler: 'sharp-affine' });
    const refB = await theirs(await rawImage(b)) as { pixel_values: TjsTensor; image_grid_thw: TjsTensor };
    expect(two.tensors.pixel_values.dims).toEqual([one.tensors.pixel_values.dims[0] + refB.pixel_values.dims[0], 1176]);
    expect(ints(two.tensors.image_grid_thw)).toEqual([...ints(one.tensors.image_grid_thw), ...ints(refB.image_grid_thw)]);
    const text = two.expandPrompt('<|image_pad|> and <|image_pad|>');
    expect(text).toBe(`${'<|image_pad|>'.repeat(two.tokensPerImage[0])} and ${'<|image_pad|>'.repeat(two.tokensPerImage[1])}`);
    expect(await code(Promise.resolve().then(() => two.expandPrompt('only one <|image_pad|>')))).toBe('E_PROMPT_IMAGES');
  });

  it('smart_resize rounds ties to even as Python does (70 / 28 = 2.5 → 2 → 56)', () => {
    // Python: round(70 / 28) = round(2.5) = 2 → 56; round(140 / 28) = 5 → 140 (transformers.js: 84 × 140)
    expect(smartResize(70, 140, 28, 3136, 12845056)).toEqual([56, 140]);
    expect(smartResize(98, 140, 28, 3136, 12845056)).toEqual([112, 140]); // 3.5 → 4
  });

  it('the default Pillow resampler keeps the shapes and stays near transformers.js (measured)', async () => {
    const bytes = await png(300, 200);
    const pil = await ours.preprocess([bytes]);
    const ref = await theirs(await rawImage(bytes)) as { pixel_values: TjsTensor };
    const d = maxAbsDiff(pil.tensors.pixel_values, ref.pixel_values);
    expect(d).toBeGreaterThan(0); // a different resampler, not the same code path
    expect(d).toBeLessThan(3); // normalised units (CLIP std ≈ 0.27); measured 2.46: see the header
  });

  it('refuses an output-changing key it does not implement (E_PREPROCESSOR_UNSUPPORTED) and reports unknown keys', async () => {
    const bad = await modelDir('qwen2-vl', { ...SMALL, do_center_crop: true, crop_size: 28 });
    expect(await code(loadFamilyProcessor(bad))).toBe('E_PREPROCESSOR_UNSUPPORTED');
    const odd = await modelDir('qwen2-vl', { ...SMALL, some_future_key: 3 });
    expect((await loadFamilyProcessor(odd))!.notices).toHaveLength(1);
    const broken = await modelDir('qwen2-vl', { ...SMALL, patch_size: 0, resample: 11 });
    const e = await loadFamilyProcessor(broken).catch((x: { code: string; detail: { notes: string[] } }) => x);
    expect((e as { code: string }).code).toBe('E_PREPROCESSOR');
    expect((e as { detail: { notes: string[] } }).detail.notes).toHaveLength(2);
    await Promise.all([bad, odd, broken].map(removeModelDir));
  });
});

describe('get_rope_index vs transformers.js', () => {
  const model = { image_token_id: 151655, video_token_id: 151656, vision_start_token_id: 151652, vision_config: { spatial_merge_size: 2 } };
  const tok = ropeTokensFromConfig(model);
  const VS = 151652, VE = 151653, IMG = 151655;
  const tjs = Object.assign(Object.create(Qwen2VLForConditionalGeneration.prototype), { config: model }) as {
    get_rope_index(ids: Tensor, grid: Tensor | null, video: null, mask?: Tensor): [TjsTensor, TjsTensor];
  };
  const tensor = (rows: number[][]) => new Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0].length]);
  const prompt = (grids: [number, number, number][]) => {
    const ids = [1, 2, 3];
    for (const [t, h, w] of grids) ids.push(VS, ...Array<number>((t * h * w) / 4).fill(IMG), VE, 7, 8);
    return [...ids, 9, 10, 11];
  };

  it('matches on prompts with 0, 1 and 2 images (positions [3, 1, L] and the rope delta)', () => {
    for (const grids of [[], [[1, 4, 6]], [[1, 4, 6], [1, 8, 2]]] as [number, number, number][][]) {
      const ids = prompt(grids);
      const mine = getRopeIndex([ids], grids, tok);
      const [pos, delta] = tjs.get_rope_index(tensor([ids]), grids.length ? tensor(grids) : null, null);
      expect(pos.dims, `${grids.length} images`).toEqual([...mine.dims]);
      expect(Array.from(mine.positionIds, Number), `${grids.length} images`).toEqual(ints(pos));
      expect(mine.ropeDeltas, `${grids.length} images`).toEqual(ints(delta));
    }
  });

  it('matches with left padding (unmasked positions and delta; Python writes 1 at padding, transformers.js 0)', () => {
    const grids: [number, number, number][] = [[1, 4, 4]];
    const ids = [0, 0, ...prompt(grids)];
    const mask = ids.map((_, i) => (i < 2 ? 0 : 1));
    const mine = getRopeIndex([ids], grids, tok, [mask]);
    const [pos, delta] = tjs.get_rope_index(tensor([ids]), tensor(grids), null, tensor([mask]));
    const theirs = ints(pos), L = ids.length;
    for (let a = 0; a < 3; a++)
      for (let j = 0; j < L; j++) expect(Number(mine.positionIds[a * L + j])).toBe(mask[j] ? theirs[a * L + j] : 1);
    expect(mine.ropeDeltas).toEqual(ints(delta));
  });

  it('text only with an attention mask: positions as transformers.js, delta by Python (max + 1 − L = 0)', () => {
    const ids = [5, 6, 7, 8];
    const mine = getRopeIndex([ids], [], tok, [[1, 1, 1, 1]]);
    const [pos] = tjs.get_rope_index(tensor([ids]), null, null, tensor([[1, 1, 1, 1]]));
    expect(Array.from(mine.positionIds, Number)).toEqual(ints(pos));
    // transformers.js 4.3.1's text-only branch adds the length instead of subtracting it (gives 8 here)
    expect(mine.ropeDeltas).toEqual([0]);
  });

  it('decode steps continue at past length + delta on all three axes', () => {
    const grids: [number, number, number][] = [[1, 4, 6]];
    const ids = prompt(grids);
    const { ropeDeltas, positionIds } = getRopeIndex([ids], grids, tok);
    const last = Math.max(...Array.from(positionIds, Number));
    // the first generated token sits right after the prompt's largest position
    expect(Array.from(decodePositionIds(ids.length, ropeDeltas), Number)).toEqual([last + 1, last + 1, last + 1]);
  });
});
