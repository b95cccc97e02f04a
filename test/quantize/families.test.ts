/**
 * `quantize` (the default recipe, and npu-int8 calibrated on images through the model's own processor)
 * → `compile --target rk3588` → the runtime, on brick sets partitioned from every family fixture (fp32):
 * text-only Optimum exports, onnxruntime-genai GroupQueryAttention exports, Qwen2-VL / Qwen2.5-VL
 * (grid_thw, 3-D mRoPE position_ids), SmolVLM (pixel_attention_mask, num_images), Gemma 3 (token_type_ids,
 * num_logits_to_keep), LLaVA. The encoder-decoder families (Whisper, Florence-2) are in ./seq2seq.test.ts.
 *
 * Oracle for "the quantized bundle still runs": the runtime (openModel's processor + chat template →
 * KV-cache generation) must produce the same greedy tokens as a plain ONNX Runtime loop that re-runs
 * every brick of the bundle over the whole sequence without a cache (ortGreedyNoCache, which shares no
 * code with the runtime's generation loop); the quantizer's own figures are only sanity-checked.
 * The bundles are compiled with engine 'ort': that oracle is exact only for the ONNX bricks themselves, and
 * compile's default would pack the CPU decoders for the native kernels (Q4/Q8 repacks whose random-weight
 * logits may swap a near tie; the engine's own oracle tests are test/kernels/oracle.test.ts and
 * test/compile/engine-auto.test.ts).
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { buildGqaTextLm } from '../../src/fixtures/gqa-decoder.js';
import { buildTinyGemma3Vlm } from '../../src/fixtures/gemma3-vlm.js';
import { buildTinyLlava } from '../../src/fixtures/llava.js';
import { buildTinyQwen2Vl } from '../../src/fixtures/qwen2-vl.js';
import { buildTinySmolVlm } from '../../src/fixtures/smolvlm.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { partition } from '../../src/partition/index.js';
import { preparePrompt } from '../../src/quantize/eval-items.js';
import { ortGreedyNoCache, runtimeGreedy } from '../../src/quantize/greedy.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { RECIPES } from '../../src/quantize/recipes.js';
import { openModel } from '../../src/run/model.js';

const PROMPT = 'What is in the picture?';
const NEW_TOKENS = 3;
let root: string;
beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'nanomind-quant-families-')); });
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

async function png(file: string, w: number, h: number, seed: number): Promise<string> {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = (y * w + x) * 3;
    px[i] = Math.round(127.5 + 127.5 * Math.sin((x / w) * 6.283 * (1 + seed) + seed));
    px[i + 1] = Math.round((255 * y) / (h - 1));
    px[i + 2] = (x * 7 + y * 3 * (seed + 1)) % 256;
  }
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
  return file;
}

/** Four images (sizes the Qwen2-VL processor takes without resizing): three calibrate, one is held out. */
async function imageFolder(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [k, [w, h]] of ([[112, 56], [84, 112], [56, 56], [112, 84]] as const).entries()) await png(join(dir, `img-${k}.png`), w, h, k);
  return dir;
}

/** Runtime greedy tokens on a bundle equal the plain no-cache ORT loop's, for one prepared turn. */
async function expectRuns(bundle: string, image?: string): Promise<void> {
  const m = await openModel(bundle);
  const prompt = await preparePrompt(m, PROMPT, image).finally(() => m.close());
  if (image) expect(Object.keys(prompt.media ?? {}).length).toBeGreaterThan(0);
  const manifest = await readBricksManifest(bundle);
  const [got] = await runtimeGreedy(bundle, manifest, [prompt], NEW_TOKENS);
  const [ref] = await ortGreedyNoCache(bundle, manifest, [prompt], NEW_TOKENS);
  expect(got).toHaveLength(NEW_TOKENS);
  expect(got).toEqual(ref);
}

interface Family { readonly name: string; readonly build: (dir: string) => Promise<unknown>; readonly vlm: boolean }
const FAMILIES: readonly Family[] = [
  ...(['qwen2.5', 'qwen3', 'llama3.2', 'smollm2'] as const).map((f) => ({ name: f, build: (d: string) => buildTextFamily(d, f, { seed: 1 }), vlm: false })),
  ...(['phi3', 'phi3_longrope', 'qwen3', 'gemma3_text'] as const).map((f) => ({ name: `${f} (GQA)`, build: (d: string) => buildGqaTextLm(d, { family: f }), vlm: false })),
  { name: 'qwen2_vl', build: (d) => buildTinyQwen2Vl(d, { variant: 'qwen2_vl', seed: 7 }), vlm: true },
  { name: 'qwen2_5_vl', build: (d) => buildTinyQwen2Vl(d, { variant: 'qwen2_5_vl', seed: 0 }), vlm: true },
  { name: 'smolvlm', build: (d) => buildTinySmolVlm(d, { family: 'smolvlm' }), vlm: true },
  { name: 'gemma3', build: (d) => buildTinyGemma3Vlm(d, { seed: 1 }), vlm: true },
  { name: 'llava', build: (d) => buildTinyLlava(d), vlm: true },
];

describe.each(FAMILIES.map((f) => [f.name, f] as const))('%s', (name, f) => {
  const slug = name.replace(/\W+/g, '_');
  it('default recipe and npu-int8 quantize, compile for rk3588, and the bundles run', async () => {
    const src = join(root, slug);
    await f.build(src);
    const bricks = join(root, `${slug}-bricks`);
    await partition({ input: src, out: bricks });
    const kinds = (await readBricksManifest(bricks)).bricks.map((b) => b.kind);

    // default recipe: no --calib (random text prompts for the language model, never for static int8)
    const q = await quantizeBricks({ dir: bricks, out: join(root, `${slug}-q`), calib: 2, heldOut: 1, newTokens: 0 });
    expect(q.report.bricks.map((b) => b.format)).toEqual(kinds.map((k) => RECIPES.hybrid[k]));
    const dec = q.report.bricks.find((b) => b.kind === 'decoder')!;
    expect(dec.pick!.picked).toBe(dec.pick!.awq > dec.pick!.rtn ? 'awq' : 'rtn');
    expect(dec.algorithm).toBe(dec.pick!.picked);
    expect(dec.cosine!).toBeGreaterThan(0.9);
    const b1 = join(root, `${slug}-bundle`);
    await compile({ bricks: q.out, target: 'rk3588', out: b1, rknn: 'skip', engine: 'ort' });
    const image = f.vlm ? await png(join(root, `${slug}.png`), 56, 112, 3) : undefined;
    await expectRuns(b1, image);

    // npu-int8: encoders calibrated on images prepared by the model's own processor. A text-only set gets
    // the default's formats: with the algorithm the default picked it must come out byte for byte the
    // same (so it runs as the default bundle did), and is not measured twice.
    const calib = f.vlm ? await imageFolder(join(root, `${slug}-calib`)) : undefined;
    const n = await quantizeBricks({
      dir: bricks, out: join(root, `${slug}-n`), recipe: 'npu-int8', calib, heldOut: 1, newTokens: 0,
      ...(f.vlm ? {} : { evaluate: false, calib: 2, algorithm: dec.pick!.picked }),
    });
    expect(n.report.bricks.map((b) => b.format)).toEqual(kinds.map((k) => RECIPES['npu-int8'][k]));
    if (!f.vlm) expect(n.manifest.bricks.map((b) => b.sha256)).toEqual(q.manifest.bricks.map((b) => b.sha256));
    if (f.vlm) {
      expect(n.report.calibration).toMatchObject({ source: 'dir', samples: 3, heldOut: 1 });
      const v = n.report.bricks.find((b) => b.kind === 'vision')!;
      expect(v.algorithm).toBe('qdq-minmax');
      expect(v.cosine!).toBeGreaterThan(0.98);
    }
    const b2 = join(root, `${slug}-bundle-int8`);
    await compile({ bricks: n.out, target: 'rk3588', out: b2, rknn: 'skip', engine: 'ort' });
    expect((await readdir(b2)).includes('calibration')).toBe(false); // nothing made up for rknn-toolkit2
    if (f.vlm) await expectRuns(b2, image);
  }, 60_000);
});

describe('phi3 hub variants (GroupQueryAttention)', () => {
  it('float16 I/O (fp16) is 4-bit quantized and runs; MatMulNBits already in a q4 brick are kept, with a notice', async () => {
    const src = join(root, 'phi3-variants');
    await buildGqaTextLm(src, { family: 'phi3' });
    await partition({ input: src, out: join(root, 'phi3-fp16-bricks'), dtype: 'fp16' });
    const h = await quantizeBricks({ dir: join(root, 'phi3-fp16-bricks'), out: join(root, 'phi3-fp16-q'), calib: 2, heldOut: 1, newTokens: 0 });
    const d = h.report.bricks.find((b) => b.kind === 'decoder')!;
    expect(d.rewritten.MatMulNBits).toBeGreaterThan(0);
    expect(d.cosine!).toBeGreaterThan(0.9);
    await compile({ bricks: h.out, target: 'rk3588', out: join(root, 'phi3-fp16-bundle'), rknn: 'skip', engine: 'ort' });
    await expectRuns(join(root, 'phi3-fp16-bundle'));

    await partition({ input: src, out: join(root, 'phi3-q4-bricks'), dtype: 'q4' });
    const q = await quantizeBricks({ dir: join(root, 'phi3-q4-bricks'), out: join(root, 'phi3-q4-q'), calib: 2, heldOut: 1, newTokens: 0 });
    const qd = q.report.bricks.find((b) => b.kind === 'decoder')!;
    expect(qd.rewritten.MatMulNBits).toBe(0);
    expect(qd.notes.some((n) => /MatMulNBits/.test(n))).toBe(true);
  }, 30_000);
});
