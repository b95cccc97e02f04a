/**
 * VLM families as the hub exports them, through nanomind's own path — partition (adopt) → openModel →
 * the family's image processor → chat template + placeholder expansion → encoder → merge → decoder
 * (mRoPE positions for Qwen2-VL) — against transformers.js on the same files and the same PNG: the same
 * prompt ids and the same greedy tokens. Oracle: transformers.js 4.3.1 (AutoProcessor + the family's
 * ForConditionalGeneration class).
 *
 * nanomind resamples like Pillow by default, transformers.js like libvips' affine
 * (test/run/inputs-image.test.ts): Qwen2-VL images are sized to need no resize (multiples of the patch
 * grid inside the pixel bounds); SmolVLM's tiling and Gemma 3's fixed size always resize, so those runs
 * open the model with `resampler: 'sharp-affine'` (transformers.js' resampling) to compare pipelines,
 * not resamplers.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import {
  AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration,
  Qwen2_5_VLForConditionalGeneration, RawImage, Tensor,
} from '@huggingface/transformers';
import { readFile } from 'node:fs/promises';
import { writePatternPng } from '../../src/fixtures/images.js';
import { transformersJsRoot } from './helpers.js';
import { buildTinyQwen2Vl } from '../../src/fixtures/qwen2-vl.js';
import { buildTinyLlava } from '../../src/fixtures/llava.js';
import { buildTinySmolVlm } from '../../src/fixtures/smolvlm.js';
import { buildTinyGemma3Vlm } from '../../src/fixtures/gemma3-vlm.js';
import type { Resampler } from '../../src/run/inputs/image.js';
import { ALL_VARIANTS, DTYPE_VARIANTS, writeDtypeVariants } from '../../src/fixtures/variants.js';
import { partition } from '../../src/partition/index.js';
import { openModel, prepareTurn } from '../../src/run/model.js';
import { generate } from '../../src/run/generation/chat-session.js';

const NEW_TOKENS = 10;
const PROMPT = 'What is in the picture?';
const tjsRoot = transformersJsRoot('nanomind-vlm-families-');
let root: string;
beforeAll(() => { root = tjsRoot.dir(); });

const png = writePatternPng;

type Gen = { generate: (o: Record<string, unknown>) => Promise<{ data: BigInt64Array }>; dispose: () => Promise<void> };

/**
 * LLaVA-OneVision has no processor class in transformers.js 4.3.1 (AutoProcessor gives the image processor
 * alone): the prompt is rendered by its tokenizer's chat template and each `<image>` is repeated
 * `image_seq_length` times (config.json), as Python's LlavaOnevisionProcessor does for one base patch.
 */
async function transformersJsLlava(name: string, cls: { from_pretrained: (n: string, o: object) => Promise<unknown> }, file: string, dtype: string) {
  const tok = await AutoTokenizer.from_pretrained(name);
  const images = await AutoImageProcessor.from_pretrained(name);
  const config = JSON.parse(await readFile(join(root, name, 'config.json'), 'utf8')) as { image_token_index: number; image_seq_length: number };
  const model = await cls.from_pretrained(name, { dtype, local_files_only: true }) as Gen;
  try {
    const text = tok.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }] as never,
      { add_generation_prompt: true, tokenize: false }) as string;
    const ids = tok.encode(text, { add_special_tokens: false }).flatMap((t) => (t === config.image_token_index ? Array(config.image_seq_length).fill(t) : [t]));
    const { pixel_values } = await images(await RawImage.read(file));
    const out = await model.generate({
      input_ids: new Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
      attention_mask: new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
      pixel_values, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0,
    });
    return { prompt: ids, tokens: Array.from(out.data, Number).slice(ids.length) };
  } finally {
    await model.dispose();
  }
}

async function transformersJs(name: string, cls: { from_pretrained: (n: string, o: object) => Promise<unknown> }, file: string, dtype = 'fp32') {
  if (name === 'llava_onevision') return transformersJsLlava(name, cls, file, dtype);
  const processor = await AutoProcessor.from_pretrained(name, { local_files_only: true });
  const model = await cls.from_pretrained(name, { dtype, local_files_only: true }) as Gen;
  try {
    const text = processor.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }] as never,
      { add_generation_prompt: true }) as unknown as string;
    // The rendered template already holds the special tokens (Gemma's <bos>): tokenize without adding more,
    // as nanomind does and as Python's apply_chat_template(tokenize=True) does.
    const inputs = await processor(text, await RawImage.read(file), { add_special_tokens: false }) as Record<string, { data: ArrayLike<number | bigint> }>;
    const out = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0 });
    const prompt = Array.from(inputs.input_ids!.data, Number);
    return { prompt, tokens: Array.from(out.data, Number).slice(prompt.length) };
  } finally {
    await model.dispose();
  }
}

async function nanomind(bricks: string, file: string, resampler?: Resampler) {
  const m = await openModel(bricks, { resampler });
  try {
    const turn = await prepareTurn(m, { prompt: PROMPT, images: [{ file }] });
    // Both stop at the model's eos ids and return the eos token itself.
    const r = await generate(m.set, { inputIds: turn.inputIds, features: turn.features, mropePositions: turn.mropePositions },
      { maxNewTokens: NEW_TOKENS });
    return { prompt: turn.inputIds, tokens: [...r.tokens] };
  } finally {
    await m.close();
  }
}

type Cls = { from_pretrained: (n: string, o: object) => Promise<unknown> };
interface Family {
  readonly name: string;
  readonly build: (dir: string) => Promise<unknown>;
  readonly cls: Cls;
  readonly images: readonly (readonly [number, number, number])[];
  readonly resampler?: Resampler;
}

const FAMILIES: readonly Family[] = [
  { name: 'qwen2_vl', build: (d) => buildTinyQwen2Vl(d, { variant: 'qwen2_vl', seed: 7 }), cls: Qwen2VLForConditionalGeneration as unknown as Cls, images: [[112, 56, 0], [84, 112, 1]] },
  { name: 'qwen2_5_vl', build: (d) => buildTinyQwen2Vl(d, { variant: 'qwen2_5_vl', seed: 0 }), cls: Qwen2_5_VLForConditionalGeneration as unknown as Cls, images: [[112, 56, 0], [84, 112, 1]] },
  { name: 'smolvlm', build: (d) => buildTinySmolVlm(d, { family: 'smolvlm' }), cls: AutoModelForImageTextToText as unknown as Cls, images: [[64, 32, 0], [32, 64, 1]], resampler: 'sharp-affine' },
  { name: 'smolvlm2', build: (d) => buildTinySmolVlm(d, { family: 'smolvlm2' }), cls: AutoModelForImageTextToText as unknown as Cls, images: [[64, 32, 0]], resampler: 'sharp-affine' },
  // LLaVA-OneVision with a vision export that takes the base image (no image_sizes): transformers.js'
  // LlavaOnevisionForConditionalGeneration feeds it that way too (no anyres tiling in transformers.js 4.3.1).
  { name: 'llava_onevision', build: (d) => buildTinyLlava(d), cls: AutoModelForImageTextToText as unknown as Cls, images: [[32, 32, 0], [32, 32, 2]] },
  { name: 'gemma3', build: (d) => buildTinyGemma3Vlm(d, { seed: 1 }), cls: AutoModelForImageTextToText as unknown as Cls, images: [[32, 32, 0], [50, 20, 1]], resampler: 'sharp-affine' },
];

const STEMS = ['vision_encoder', 'embed_tokens', 'decoder_model_merged'];

describe.each(FAMILIES.map((f) => [f.name, f] as const))('%s', (name, f) => {
  let bricks: string;
  let dir: string;
  beforeAll(async () => {
    dir = join(root, name);
    await f.build(dir);
    // The hub's dtype variants as transformers.js' quantize.py writes them (float32 I/O: keep_io_types).
    await writeDtypeVariants(join(dir, 'onnx'), STEMS, ALL_VARIANTS, { fp16Io: 'float32' });
    bricks = join(root, `${name}-bricks`);
    await partition({ input: dir, out: bricks });
  });
  it.each(ALL_VARIANTS.map((v) => [DTYPE_VARIANTS[v].dtype, DTYPE_VARIANTS[v].suffix.slice(1)]))('%s variant: same greedy tokens as transformers.js', async (dtype, suffix) => {
    const [w, h, seed] = f.images[0]!;
    const file = await png(join(root, `${name}-${w}x${h}.png`), w, h, seed);
    const ref = await transformersJs(name, f.cls as never, file, dtype);
    const b = join(root, `${name}-${suffix}-bricks`);
    await partition({ input: dir, out: b, dtype: suffix });
    const got = await nanomind(b, file, f.resampler);
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
  });
  it.each(f.images.map((x) => [...x]))('%dx%d image: same prompt ids and greedy tokens as transformers.js', async (w, h, seed) => {
    const file = await png(join(root, `${name}-${w}x${h}.png`), w, h, seed);
    const ref = await transformersJs(name, f.cls as never, file);
    const got = await nanomind(bricks, file, f.resampler);
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
    expect(new Set(ref.tokens).size).toBeGreaterThan(2);
  });
});
