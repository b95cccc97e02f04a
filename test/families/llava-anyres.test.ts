/**
 * LLaVA-OneVision anyres end to end: processor tiles → vision encoder on base patch + tiles → packing
 * (unpad, anyres_max_N bilinear downscale, image_newline rows) → merge → greedy decoding, on the anyres
 * fixture (src/fixtures/llava.ts: the real config's pinpoint grid and anyres_max_9, image_newline as an
 * encoder output). transformers.js 4.3.1 runs the base patch only, so it cannot be the oracle here:
 *
 * (a) PyTorch (src/fixtures/llava-anyres-oracle.ts) — test/families/llava_anyres_pack.py implements Python transformers' pack_image_features
 *     with torch ops (Debian's python3-torch on /usr/bin/python3). It packs the rows that a plain
 *     onnxruntime-node session of the vision encoder gives for the processor's pixel_values; nanomind's
 *     merged rows must match within 1e-5, for a wide, a tall, a square and an anyres_max-downscaled image.
 *     Skipped, with the reason printed, where `python3 -c 'import torch'` fails (.ci/run installs it).
 * (b) A plain onnxruntime-node greedy loop (test/fixtures/vlm-oracle.ts `ortGreedy`: own embed, merge,
 *     KV cache, position ids) fed the PyTorch-packed rows: its tokens must equal nanomind's `runPrompt`
 *     (what `nanomind run --image` calls), in fp32 and every dtype variant the family test runs.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { compile } from '../../src/compile/index.js';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { transformersJsRoot } from './helpers.js';
import { buildTinyLlava, llavaPinpoints, type TinyLlavaConfig } from '../../src/fixtures/llava.js';
import { writePatternPng } from '../../src/fixtures/images.js';
import { anyresEncoderRows, torchMissing, torchPackAnyres, type EncodedImage } from '../../src/fixtures/llava-anyres-oracle.js';
import { ALL_VARIANTS, DTYPE_VARIANTS, writeDtypeVariants } from '../../src/fixtures/variants.js';
import { IMAGE_NEWLINE_FILE } from '../../src/formats/image-newline.js';
import { partition } from '../../src/partition/index.js';
import { preparePrompt } from '../../src/quantize/eval-items.js';
import { ortGreedyNoCache } from '../../src/quantize/greedy.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { anyresGeometry } from '../../src/run/inputs/families/llava-onevision-pack.js';
import { ANYRES_NEEDS_NEWLINE } from '../../src/run/anyres.js';
import { openModel, prepareTurn } from '../../src/run/model.js';
import { runImageStream, runPrompt } from '../../src/run/run.js';
import { cli } from '../cli-helper.js';
import { code } from '../error-codes.js';
import { ortGreedy } from '../fixtures/vlm-oracle.js';

const torchReason = torchMissing();
if (torchReason) console.warn(`llava-anyres: PyTorch oracle tests skipped: ${torchReason}`);

const PROMPT = 'What is in the picture?';
const NEW_TOKENS = 8;
const STEMS = ['vision_encoder', 'embed_tokens', 'decoder_model_merged'];
// [width, height, seed]: wide, tall, square, and one whose 16 × 20 map (4 × 5 tiles) exceeds anyres_max_9 (→ 10 × 13).
const IMAGES = [[96, 40, 0], [40, 100, 1], [64, 64, 2], [160, 128, 3]] as const;

const tjsRoot = transformersJsRoot('nanomind-llava-anyres-');
let root: string;
let model: string;
let bricks: string;
let cfg: TinyLlavaConfig;
beforeAll(async () => {
  root = tjsRoot.dir();
  model = join(root, 'llava-anyres');
  cfg = (await buildTinyLlava(model, { anyres: { newline: 'output' } })).config;
  await writeDtypeVariants(join(model, 'onnx'), STEMS, ALL_VARIANTS, { fp16Io: 'float32' });
  bricks = join(root, 'llava-anyres-bricks');
  await partition({ input: model, out: bricks });
});

const png = (w: number, h: number, seed: number) => writePatternPng(join(root, `anyres-${w}x${h}.png`), w, h, seed);

const encoderRows = (file: string, suffix = '') => anyresEncoderRows(model, file, suffix);
const torchPack = (items: readonly EncodedImage[]) => torchPackAnyres(root, cfg, items);

const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const count = (ids: readonly number[], id: number) => ids.filter((t) => t === id).length;

describe.skipIf(torchReason)('LLaVA-OneVision anyres packing against PyTorch', () => {
  const VARIANTS = ALL_VARIANTS.map((v) => [DTYPE_VARIANTS[v].dtype, DTYPE_VARIANTS[v].suffix] as const);
  let files: string[];
  /** PyTorch-packed rows: fp32 for every image, and per dtype suffix for the first image (one python3 run). */
  let fp32: Float32Array[];
  const bySuffix = new Map<string, Float32Array>();
  beforeAll(async () => {
    files = await Promise.all(IMAGES.map(([w, h, seed]) => png(w, h, seed)));
    const jobs = [...await Promise.all(files.map((f) => encoderRows(f))), ...await Promise.all(VARIANTS.map(([, suffix]) => encoderRows(files[0]!, suffix)))];
    const packed = await torchPack(jobs);
    fp32 = packed.slice(0, files.length);
    VARIANTS.forEach(([, suffix], i) => bySuffix.set(suffix, packed[files.length + i]!));
  });

  it('wide, tall, square and anyres_max-downscaled images: merged rows = PyTorch pack_image_features within 1e-5', async () => {
    const m = await openModel(bricks);
    try {
      expect(m.anyres?.newline.from).toBe('output');
      for (const [i, file] of files.entries()) {
        const turn = await prepareTurn(m, { prompt: PROMPT, images: [{ file }] });
        const got = turn.features[cfg.imageTokenId]!;
        // The processor's token count (computed apart from the packing) equals PyTorch's packed length.
        expect(count(turn.inputIds, cfg.imageTokenId)).toBe(fp32[i]!.length / cfg.text.hidden);
        expect(got.length).toBe(fp32[i]!.length);
        expect(maxAbsDiff(got, fp32[i]!)).toBeLessThan(1e-5);
      }
    } finally {
      await m.close();
    }
    // The cases are what they claim: the last one is downscaled, the others are not; wide/tall are unpadded.
    const geo = IMAGES.map(([w, h]) => anyresGeometry(h, w, { pinpoints: llavaPinpoints(cfg) as [number, number][], tileSize: 32, side: 4, maxNumPatches: 9 }));
    expect(geo.map((g) => g.outHeight !== g.height)).toEqual([false, false, false, true]);
    expect(geo[0]!.height).toBeLessThan(geo[0]!.rows * 4);
    expect(geo[1]!.width).toBeLessThan(geo[1]!.cols * 4);
  });

  /** runPrompt's tokens (what `nanomind run --image` calls) and the ORT loop's on the PyTorch-packed rows. */
  async function tokens(dir: string, file: string, packed: Float32Array, suffix = '') {
    const m = await openModel(dir);
    try {
      expect(m.anyres?.newline.from).toBe('output');
      const ids = (await prepareTurn(m, { prompt: PROMPT, images: [{ file }] })).inputIds;
      const got = await runPrompt(m, { prompt: PROMPT, images: [{ file }] }, { maxNewTokens: NEW_TOKENS });
      const ref = await ortGreedy({ dir: model, suffix, promptIds: ids, features: packed, imageTokenId: cfg.imageTokenId, newTokens: NEW_TOKENS,
        positionIds: { start: 0 }, numLogitsToKeep: false, layers: cfg.text.layers, kvHeads: cfg.text.kvHeads, headDim: cfg.text.headDim });
      return { got: [...got.tokens], ref };
    } finally {
      await m.close();
    }
  }

  it('fp32: runPrompt and `nanomind run` tokens = a plain ORT greedy loop on the PyTorch-packed rows (downscaled image)', async () => {
    const { got, ref } = await tokens(bricks, files[3]!, fp32[3]!);
    expect(got.length).toBeGreaterThan(0);
    expect(got).toEqual(ref.slice(0, got.length)); // runPrompt stops at eos, the loop does not
    expect(new Set(ref).size).toBeGreaterThan(2);
    const r = await cli('run', bricks, '--image', files[3]!, '--prompt', PROMPT, '--max-tokens', String(NEW_TOKENS), '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tokens).toEqual(got);
    expect(r.stderr).not.toContain('image_newline');
  });

  it.each(VARIANTS)('%s variant: runPrompt tokens = the ORT loop on PyTorch-packed rows', async (_dtype, suffix) => {
    const b = join(root, `bricks${suffix}`);
    await partition({ input: model, out: b, dtype: suffix.slice(1) });
    const { got, ref } = await tokens(b, files[0]!, bySuffix.get(suffix)!, suffix);
    expect(got.length).toBeGreaterThan(0);
    expect(got).toEqual(ref.slice(0, got.length));
  });
});

describe('where image_newline comes from', () => {
  /** The merged rows of one wide image, and the model's notices and newline source. */
  async function rowsOf(dir: string) {
    const m = await openModel(dir);
    try {
      const turn = await prepareTurn(m, { prompt: PROMPT, images: [{ file: await png(96, 40, 0) }] });
      return { rows: turn.features[cfg.imageTokenId]!, ids: turn.inputIds, from: m.anyres?.newline.from, notices: m.notices };
    } finally {
      await m.close();
    }
  }

  it('an encoder initializer or a model.safetensors gives the same packed rows as the encoder output', async () => {
    const ref = await rowsOf(bricks);
    for (const newline of ['initializer', 'safetensors'] as const) {
      const dir = join(root, `llava-${newline}`);
      await buildTinyLlava(dir, { anyres: { newline } });
      const out = join(root, `llava-${newline}-bricks`);
      const p = await partition({ input: dir, out });
      expect(p.notes.filter((n) => /image_newline/.test(n))).toHaveLength(1);
      expect((await inspectModel(dir)).notes.find((n) => /image_newline/.test(n))).toMatch(newline === 'initializer' ? /initializer/ : /safetensors/);
      // A checkpoint's image_newline is copied alone into the brick set (which stays self-contained).
      expect(p.manifest.files.some((f) => f.path === IMAGE_NEWLINE_FILE)).toBe(newline === 'safetensors');
      const got = await rowsOf(out);
      expect(got.from).toBe(newline);
      expect(got.ids).toEqual(ref.ids);
      expect(maxAbsDiff(got.rows, ref.rows)).toBe(0);
    }
  });

  it('--split-projector cuts the encoder output that carried it: partition copies it into the brick set', async () => {
    const out = join(root, 'llava-split-projector-bricks');
    const p = await partition({ input: model, out, splitProjector: true });
    expect(p.manifest.bricks.map((b) => b.kind)).toEqual(['vision', 'projector', 'embed', 'decoder']);
    expect(p.manifest.files.some((f) => f.path === IMAGE_NEWLINE_FILE)).toBe(true);
    const [ref, got] = [await rowsOf(bricks), await rowsOf(out)];
    expect(got.from).toBe('safetensors');
    expect(got.ids).toEqual(ref.ids);
    expect(maxAbsDiff(got.rows, ref.rows)).toBeLessThan(1e-5); // the cut chain computes the same rows
  });

  it('none: the base patch alone, with one notice (as transformers.js runs it)', async () => {
    const dir = join(root, 'llava-none');
    await buildTinyLlava(dir, { anyres: { newline: 'none' } });
    const out = join(root, 'llava-none-bricks');
    const p = await partition({ input: dir, out });
    expect(p.notes.filter((n) => /image_newline/.test(n))).toHaveLength(1);
    const got = await rowsOf(out);
    expect(got.from).toBeUndefined();
    expect(got.notices.filter((n) => n === ANYRES_NEEDS_NEWLINE)).toHaveLength(1);
    expect(got.rows.length).toBe(cfg.numImageTokens * cfg.text.hidden);
    expect(count(got.ids, cfg.imageTokenId)).toBe(cfg.numImageTokens);
    // `run` prints the notice once; `inspect` says the same before partitioning.
    const r = await cli('run', out, '--image', await png(96, 40, 0), '--prompt', PROMPT, '--max-tokens', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.split(ANYRES_NEEDS_NEWLINE)).toHaveLength(2);
    expect((await inspectModel(dir)).notes.filter((n) => /no image_newline/.test(n))).toHaveLength(1);
  });

  it('the image stream (fixed ring slots) refuses anyres images with one error', async () => {
    const m = await openModel(bricks);
    try {
      expect(await code(runImageStream(m, [await png(96, 40, 0)], PROMPT))).toBe('E_ANYRES_STREAM');
    } finally {
      await m.close();
    }
  });
});

describe('quantize and compile an anyres model', () => {
  // The quantizer's own passes (calibration, held-out check, greedy agreement) pack the encoder rows as the
  // runtime does; without that the processor's <image> count and the raw tile rows disagree (E_MERGE_COUNT).
  // Oracle: quantize's independent no-cache ORT loop (`ortGreedyNoCache`) on the quantized bricks, fed the
  // packed rows, against the runtime's generation on the compiled bundle.
  it('quantize --calib <images>, compile --target rk3588, and the bundle runs anyres images', async () => {
    const calib = join(root, 'calib-images');
    await mkdir(calib, { recursive: true });
    for (const [w, h, seed] of IMAGES) await writePatternPng(join(calib, `${w}x${h}.png`), w, h, seed);
    const q = await quantizeBricks({ dir: bricks, out: join(root, 'anyres-q'), calib, heldOut: 1, newTokens: 4 });
    expect(q.report.bricks.map((b) => b.name).sort()).toEqual(['decoder', 'embed', 'vision']);
    const bundle = join(root, 'anyres-bundle');
    await compile({ bricks: q.out, target: 'rk3588', out: bundle, rknn: 'skip' });
    const file = await png(160, 128, 3);
    const m = await openModel(bundle);
    let got: number[];
    try {
      expect(m.anyres?.newline.from).toBe('output');
      got = [...(await runPrompt(m, { prompt: PROMPT, images: [{ file }] }, { maxNewTokens: NEW_TOKENS })).tokens];
    } finally {
      await m.close();
    }
    const qm = await openModel(q.out);
    try {
      const prompt = await preparePrompt(qm, PROMPT, file);
      expect(prompt.packs).toBeDefined();
      const [ref] = await ortGreedyNoCache(q.out, await readBricksManifest(q.out), [prompt], NEW_TOKENS);
      expect(got.length).toBeGreaterThan(0);
      expect(got).toEqual(ref!.slice(0, got.length));
    } finally {
      await qm.close();
    }
  });
});
