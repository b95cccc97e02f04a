/**
 * Calibration inputs are real, never noise, for static int8: `quantize` refuses w8a8 encoders without
 * `--calib`, and `--calib DIR` of images prepares each image with the model's own processor (here
 * Qwen2-VL: patches, grid_thw, the chat template with the image placeholders expanded, mRoPE positions).
 *
 * Oracle: transformers.js 4.3.1's AutoProcessor + chat template on the same folder and the same PNG
 * (sized to need no resize, so resampling plays no part): the calibration sample's vision feeds and
 * prompt ids must equal the processor's pixel_values, image_grid_thw and input_ids.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { AutoProcessor, RawImage, env } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { buildTinyLlava } from '../../src/fixtures/llava.js';
import { buildTinyQwen2Vl } from '../../src/fixtures/qwen2-vl.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { buildSamples } from '../../src/quantize/samples.js';
import { code } from '../error-codes.js';

const PROMPT = 'Describe the picture.';
let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-calib-'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root + '/';
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

async function png(file: string, w: number, h: number, seed: number): Promise<string> {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([(x * 255) / w, (y * 255) / h, (seed * 40 + x + 2 * y) % 256], (y * w + x) * 3);
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
  return file;
}

describe('static int8 calibration', () => {
  it('refuses w8a8 encoders without --calib, with one error naming it, and writes nothing', async () => {
    await buildTinyLlava(join(root, 'llava'));
    await partition({ input: join(root, 'llava'), out: join(root, 'llava-bricks') });
    const out = join(root, 'llava-int8');
    expect(await code(quantizeBricks({ dir: join(root, 'llava-bricks'), out, recipe: 'npu-int8' }))).toBe('E_QUANT_CALIB');
    expect(await code(quantizeBricks({ dir: join(root, 'llava-bricks'), out, recipe: 'fp32', overrides: { vision: 'w8a8' }, calib: 8 }))).toBe('E_QUANT_CALIB');
    expect(existsSync(out)).toBe(false);
  });

  it('--calib DIR of images: each sample is what the model\'s own processor makes of the image (Qwen2-VL)', async () => {
    const model = join(root, 'qwen2_vl');
    await buildTinyQwen2Vl(model, { variant: 'qwen2_vl', seed: 7 });
    const bricks = join(root, 'qwen2_vl-bricks');
    await partition({ input: model, out: bricks });
    const dir = join(root, 'qwen-calib');
    await mkdir(dir, { recursive: true });
    const sizes = [[112, 56], [56, 84]] as const;
    for (const [k, [w, h]] of sizes.entries()) await png(join(dir, `img-${k}.png`), w, h, k);
    await writeFile(join(dir, 'prompts.txt'), `${PROMPT}\n`);

    const m = await readBricksManifest(bricks);
    const vision = m.bricks.find((b) => b.kind === 'vision')!;
    const { samples, unfed } = await buildSamples(bricks, m, { count: Infinity, seed: 0, calibDir: dir });
    expect(unfed).toEqual([]);
    expect(samples).toHaveLength(sizes.length);

    const processor = await AutoProcessor.from_pretrained('qwen2_vl', { local_files_only: true });
    const text = processor.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }] as never,
      { add_generation_prompt: true }) as unknown as string;
    for (const [k, s] of samples.entries()) {
      const ref = await processor(text, await RawImage.read(join(dir, `img-${k}.png`)), { add_special_tokens: false }) as
        Record<string, { data: Float32Array | BigInt64Array; dims: number[] }>;
      const feeds = s.feeds.get(vision.name)!;
      const grid = vision.inputs.find((i) => i.name !== 'pixel_values')!.name; // grid_thw as the export names it
      expect(feeds.pixel_values!.dims).toEqual(ref.pixel_values!.dims);
      const got = feeds.pixel_values!.data as Float32Array, want = ref.pixel_values!.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      expect(worst).toBeLessThan(1e-5);
      expect([...(feeds[grid]!.data as BigInt64Array)]).toEqual([...(ref.image_grid_thw!.data as BigInt64Array)]);
      expect(s.inputIds!.map(Number)).toEqual(Array.from(ref.input_ids!.data as BigInt64Array, Number));
      // the decoder was calibrated with the family's 3-D mRoPE positions, not flat ones
      const pos = s.feeds.get(m.bricks.find((b) => b.kind === 'decoder')!.name)!.position_ids!;
      expect(pos.dims).toEqual([3, 1, s.inputIds!.length]);
      const n = s.inputIds!.length, rows = [0, 1, 2].map((a) => [...(pos.data as BigInt64Array).subarray(a * n, (a + 1) * n)]);
      expect(rows[1]).not.toEqual(rows[0]); // image rows: height positions differ from temporal ones
      expect(rows[2]).not.toEqual(rows[1]);
    }
  }, 60_000);
});
