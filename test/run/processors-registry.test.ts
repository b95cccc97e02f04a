/**
 * The family registry (src/run/inputs/families/index.ts) and the key rule (families/keys.ts, also applied
 * to image.ts' generic processor through checkGenericKeys). No numerics here — the per-family files
 * test/run/processors-<family>.test.ts compare the outputs with transformers.js.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IMAGE_FAMILIES, findFamily, loadFamilyProcessor } from '../../src/run/inputs/families/index.js';
import { checkGenericKeys } from '../../src/run/inputs/image.js';
import { code, codeOf } from '../error-codes.js';
import { FIXTURES, modelDir, removeModelDir } from './processors-helpers.js';

const made: string[] = [];
afterAll(() => Promise.all(made.map(removeModelDir)));
const folder = async (family: string, o: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => {
  const d = await modelDir(family, o, extra);
  made.push(d);
  return d;
};

describe('family registry', () => {
  it('loads each real fixture config as its family, with no unread keys', async () => {
    for (const [dir, id] of [['qwen2-vl', 'qwen2-vl'], ['idefics3', 'idefics3'], ['llava-onevision', 'llava-onevision'], ['gemma3', 'gemma3']]) {
      const p = await loadFamilyProcessor(await folder(dir));
      expect(p?.family, dir).toBe(id);
      expect(p?.notices, dir).toEqual([]);
    }
  });

  it('selects by image_processor_type (Fast variants too), else by config.json model_type; unknown → undefined', () => {
    expect(findFamily({ image_processor_type: 'Qwen2VLImageProcessorFast' }, {})?.id).toBe('qwen2-vl');
    expect(findFamily({ image_processor_type: 'SmolVLMImageProcessor' }, {})?.id).toBe('idefics3');
    expect(findFamily({}, { model_type: 'qwen2_5_vl' })?.id).toBe('qwen2-vl');
    expect(findFamily({ image_processor_type: 'CLIPImageProcessor' }, { model_type: 'qwen2_vl' })).toBeUndefined();
    expect(findFamily({}, { model_type: 'llama' })).toBeUndefined();
    // every type and model_type belongs to one family only
    const types = IMAGE_FAMILIES.flatMap((f) => [...f.imageProcessorTypes, ...f.modelTypes]);
    expect(new Set(types).size).toBe(types.length);
  });

  it('returns undefined for a plain CLIP processor folder and reports a missing config as E_PREPROCESSOR', async () => {
    const d = await folder('gemma3', { image_processor_type: 'CLIPImageProcessor' });
    expect(await loadFamilyProcessor(d)).toBeUndefined();
    expect(await code(loadFamilyProcessor(join(d, 'nowhere')))).toBe('E_PREPROCESSOR');
  });

  it('reports every config problem of a family at once (E_PREPROCESSOR with one note each)', async () => {
    const d = await folder('idefics3', { max_image_size: { longest_edge: -4 }, resample: 'lanczos', do_image_splitting: 'yes' });
    const e = (await loadFamilyProcessor(d).catch((x: unknown) => x)) as { code: string; detail: { notes: string[] } };
    expect(e.code).toBe('E_PREPROCESSOR');
    expect(e.detail.notes).toHaveLength(3);
  });
});

describe('key rule on the generic (CLIP / SigLIP) processor', () => {
  it('accepts a CLIP config, refuses output-changing keys it does not implement, and notices the rest', async () => {
    const clip = { do_resize: true, size: { shortest_edge: 224 }, do_center_crop: true, crop_size: 224, image_processor_type: 'CLIPImageProcessor' };
    expect(checkGenericKeys(clip, 'p.json')).toEqual([]);
    for (const k of ['do_image_splitting', 'do_pan_and_scan'])
      expect(codeOf(() => checkGenericKeys({ ...clip, [k]: true }, 'p.json')), k).toBe('E_PREPROCESSOR_UNSUPPORTED');
    const llavaNext = JSON.parse(await readFile(join(FIXTURES, 'llava-onevision', 'preprocessor_config.json'), 'utf8'));
    expect(codeOf(() => checkGenericKeys(llavaNext, 'p.json'))).toBe('E_PREPROCESSOR_UNSUPPORTED'); // image_grid_pinpoints
    expect(checkGenericKeys({ ...clip, do_pad: false, do_pan_and_scan: null }, 'p.json')).toEqual([]); // off is fine
    expect(checkGenericKeys({ ...clip, crop_pct: 0.9 }, 'p.json')).toHaveLength(1);
  });
});
