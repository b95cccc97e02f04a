/**
 * VLM families as the hub exports them, through nanomind's own path — partition (adopt) → openModel →
 * the family's image processor → chat template + placeholder expansion → encoder → merge → decoder
 * (mRoPE positions for Qwen2-VL) — against transformers.js on the same files and the same PNG: the same
 * prompt ids and the same greedy tokens. Oracle: transformers.js 4.3.1 (AutoProcessor + the family's
 * ForConditionalGeneration class).
 *
 * Image sizes need no resize in either processor (multiples of the patch grid inside the pixel bounds):
 * nanomind resamples like Pillow, transformers.js like libvips' affine (test/run/inputs-image.test.ts),
 * so a resized image would compare the resamplers, not the pipelines.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { AutoProcessor, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration, RawImage, env } from '@huggingface/transformers';
import { buildTinyQwen2Vl } from '../../src/fixtures/qwen2-vl.js';
import { partition } from '../../src/partition/index.js';
import { openModel, prepareTurn } from '../../src/run/model.js';
import { generate } from '../../src/run/generation/chat-session.js';

const NEW_TOKENS = 10;
const PROMPT = 'What is in the picture?';
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-vlm-families-'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root + '/';
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

async function png(file: string, w: number, h: number, seed: number): Promise<string> {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = (y * w + x) * 3;
    px[i] = Math.round(127.5 + 127.5 * Math.sin((x / w) * 6.283 * (1 + seed) + seed));
    px[i + 1] = Math.round((255 * y) / (h - 1));
    px[i + 2] = Math.round(127.5 + 127.5 * Math.cos(((x + 2 * y) / (w + h)) * 12.57 * (seed + 1)));
  }
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
  return file;
}

type Gen = { generate: (o: Record<string, unknown>) => Promise<{ data: BigInt64Array }>; dispose: () => Promise<void> };

async function transformersJs(name: string, cls: { from_pretrained: (n: string, o: object) => Promise<unknown> }, file: string) {
  const processor = await AutoProcessor.from_pretrained(name, { local_files_only: true });
  const model = await cls.from_pretrained(name, { dtype: 'fp32', local_files_only: true }) as Gen;
  try {
    const text = processor.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }] as never,
      { add_generation_prompt: true }) as unknown as string;
    const inputs = await processor(text, await RawImage.read(file)) as Record<string, { data: ArrayLike<number | bigint> }>;
    const out = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS, min_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0 });
    const prompt = Array.from(inputs.input_ids!.data, Number);
    return { prompt, tokens: Array.from(out.data, Number).slice(prompt.length) };
  } finally {
    await model.dispose();
  }
}

async function nanomind(bricks: string, file: string) {
  const m = await openModel(bricks);
  try {
    const turn = await prepareTurn(m, { prompt: PROMPT, images: [{ file }] });
    const r = await generate(m.set, { inputIds: turn.inputIds, features: turn.features, mropePositions: turn.mropePositions },
      { maxNewTokens: NEW_TOKENS, stopTokenIds: [] });
    return { prompt: turn.inputIds, tokens: [...r.tokens] };
  } finally {
    await m.close();
  }
}

describe.each([
  ['qwen2_vl', Qwen2VLForConditionalGeneration],
  ['qwen2_5_vl', Qwen2_5_VLForConditionalGeneration],
] as const)('%s', (variant, cls) => {
  it.each([[112, 56, 0], [84, 112, 1]])('%dx%d image: same prompt ids (mRoPE grid expansion) and greedy tokens as transformers.js', async (w, h, seed) => {
    const dir = join(root, variant);
    await buildTinyQwen2Vl(dir, { variant, seed: variant === 'qwen2_vl' ? 7 : 0 });
    const file = await png(join(root, `${variant}-${w}x${h}.png`), w, h, seed);
    const ref = await transformersJs(variant, cls as never, file);
    await partition({ input: dir, out: join(root, `${variant}-bricks`) });
    const got = await nanomind(join(root, `${variant}-bricks`), file);
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
    expect(new Set(ref.tokens).size).toBeGreaterThan(2);
  });
});
