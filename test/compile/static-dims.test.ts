/**
 * An encoder whose image dims are dynamic in its ONNX (as the onnx-community Gemma 3 export is) but fixed
 * by its processor config: compile specializes it into a static NPU file, records where the sizes came
 * from, and the cost model and inspect count its FLOPs per image at that size, not at a 1×1 image.
 *
 * The brick is the embedded model's vision encoder (models/shapes-vlm, 72×72 images, 8×8 patches) with its
 * pixel_values dims 2 and 3 renamed to 'height' / 'width' and described as partition describes it.
 * Oracles: the same brick with static dims as partition analyzes it (FLOPs, output shape); a float64
 * count of the ViT's multiply-adds from config.json; and ORT running the specialized NPU ONNX against the
 * original brick on the same image.
 */
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyzeBrickSet } from '../../src/compile/analyze.js';
import { calibrateHost } from '../../src/compile/calibrate.js';
import { costModel } from '../../src/compile/cost.js';
import { compile } from '../../src/compile/index.js';
import { formatsOn } from '../../src/compile/placement.js';
import { loadTarget } from '../../src/compile/targets.js';
import { readBricksManifest, writeBricksManifest } from '../../src/formats/bricks.js';
import { loadModel, saveModel } from '../../src/onnx/model-io.js';
import { partition } from '../../src/partition/index.js';
import { describeBrick } from '../../src/partition/brick-files.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { detFloat } from '../run/helpers.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
let root: string, fixed: string, dynamic: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-static-dims-'));
  fixed = join(root, 'fixed');
  dynamic = join(root, 'dynamic');
  await partition({ input: MODEL, out: fixed });
  await partition({ input: MODEL, out: dynamic });
  const m = await readBricksManifest(dynamic);
  const vision = m.bricks.find((b) => b.kind === 'vision')!;
  const loaded = await loadModel(join(dynamic, vision.file));
  const dims = (loaded.model.graph!.input.find((i) => i.name === 'pixel_values')!.type!.value.value as { shape: { dim: { value: unknown }[] } }).shape.dim;
  for (const [i, name] of [[2, 'height'], [3, 'width']] as const) dims[i]!.value = { case: 'dimParam', value: name };
  await saveModel(loaded.model, join(dynamic, vision.file), { sourceDir: loaded.dir });
  const entry = await describeBrick(dynamic, vision.file, vision.name, vision.kind);
  await writeBricksManifest(dynamic, { ...m, bricks: m.bricks.map((b) => (b.name === vision.name ? entry : b)) });
});
afterAll(async () => { if (root) await rm(root, { recursive: true, force: true }); });

describe('encoder dims fixed from the configs', () => {
  it('analysis: no dim stays dynamic, FLOPs per image at 72×72 as for the static brick, not at 1×1', async () => {
    const [a, b] = await Promise.all([analyzeBrickSet(dynamic), analyzeBrickSet(fixed)]);
    const dyn = a.bricks.find((x) => x.entry.kind === 'vision')!, st = b.bricks.find((x) => x.entry.kind === 'vision')!;
    expect(dyn.entry.inputs[0]!.shape).toEqual(['batch_size', 3, 'height', 'width']);
    expect(dyn.dynamicDims).toEqual([]);
    expect(dyn.staticShapes).toEqual({ pixel_values: [1, 3, 72, 72], image_features: [1, 9, 128] });
    expect(dyn.staticFrom).toContain('height=72, width=72');
    expect(dyn.flops).toBe(st.flops);
    // bricks.json's own figure for the dynamic brick is the 1×1-image one the cost model used to take.
    expect(dyn.entry.flops!.value).toBeLessThan(st.flops / 20);

    // float64 count of the multiply-adds (2 FLOPs each) at 72×72, from config.json's sizes and the tower's
    // layers as its ONNX lays them out: a 3-conv stem (3×3 kernels, 72→36→18→18), a 2×2 patch conv to 9×9 =
    // 81 patches, 2 layers of Q/K/V/O and MLP projections plus QKᵀ and AV over 81 patches, and the
    // 96→128→128 projector on the 9 pooled rows.
    const cfg = JSON.parse(await readFile(join(MODEL, 'config.json'), 'utf8')).vision_config;
    const n = 81, d = cfg.hidden_size, f = cfg.intermediate_size, rows = 9, hid = 128;
    const conv = (cin: number, k: number, cout: number, hw: number) => 2 * cin * k * k * cout * hw * hw;
    const expected = conv(3, 3, 16, 36) + conv(16, 3, 32, 18) + conv(32, 3, 64, 18) + conv(64, 2, d, 9)
      + cfg.num_hidden_layers * (2 * 4 * d * d * n + 2 * 2 * d * f * n + 2 * 2 * n * n * d)
      + 2 * d * hid * rows + 2 * hid * hid * rows;
    expect(dyn.flops).toBe(expected);
  });

  it('inspect counts the dynamic encoder per image at the config size too, and says so', async () => {
    const folder = join(root, 'model');
    await cp(MODEL, folder, { recursive: true });
    const file = join(folder, 'onnx', 'vision_encoder.onnx');
    const loaded = await loadModel(file);
    const dims = (loaded.model.graph!.input.find((i) => i.name === 'pixel_values')!.type!.value.value as { shape: { dim: { value: unknown }[] } }).shape.dim;
    for (const [i, name] of [[2, 'height'], [3, 'width']] as const) dims[i]!.value = { case: 'dimParam', value: name };
    await saveModel(loaded.model, file, { sourceDir: loaded.dir });
    const [dyn, st] = await Promise.all([inspectModel(folder), inspectModel(MODEL)]);
    const flops = (r: typeof dyn) => r.bricks.find((b) => b.kind === 'vision')!.flops;
    expect(flops(dyn)).toEqual(flops(st));
    expect(flops(dyn).per).toBe('image');
    expect(dyn.notes.some((n) => n.includes('height=72, width=72'))).toBe(true);
  });

  it('the per-image estimate on a calibrated host profile is within 10× of a measured ORT run (the 1×1 figure is not)', async () => {
    // The host profile `bench --calibrate` writes (small sizes, as test/compile/calibrate.test.ts uses).
    const host = await calibrateHost({ mib: 8, runs: 2, threads: 1 });
    const cpu = host.accelerators.find((a) => a.kind === 'cpu')!;
    const info = (await analyzeBrickSet(dynamic)).bricks.find((x) => x.entry.kind === 'vision')!;
    const w = { images: 1, audioClips: 0, promptTokens: 16, outputTokens: 8, maxContext: 256 };
    // The brick's ORT call alone: the image preprocessing the profile also charges per image is not run here.
    const call = costModel(info, cpu, 'fp32', host, w).call(1, 1);
    const predicted = call.ms - call.runtimeMs;
    const oneByOne = costModel({ ...info, flops: info.entry.flops!.value }, cpu, 'fp32', host, w).call(1, 1).computeMs;
    const s = await ort.InferenceSession.create(join(fixed, info.entry.file), { intraOpNumThreads: 1 });
    const px = new ort.Tensor('float32', detFloat(3 * 72 * 72, 0.2), [1, 3, 72, 72]);
    await s.run({ pixel_values: px });
    const times: number[] = [];
    for (let i = 0; i < 7; i++) { const t0 = performance.now(); await s.run({ pixel_values: px }); times.push(performance.now() - t0); }
    await s.release();
    const measured = times.sort((a, b) => a - b)[3]!;
    expect(measured / predicted, `measured ${measured} ms, predicted ${predicted} ms`).toBeGreaterThan(0.1);
    expect(measured / predicted, `measured ${measured} ms, predicted ${predicted} ms`).toBeLessThan(10);
    expect(measured / oneByOne).toBeGreaterThan(10);
  });

  it('placement: the NPU is no longer ruled out; compile writes a static NPU file and records why', async () => {
    const target = await loadTarget('rk3588');
    const info = (await analyzeBrickSet(dynamic)).bricks.find((x) => x.entry.kind === 'vision')!;
    const npu = target.accelerators.find((x) => x.kind === 'npu')!;
    expect(formatsOn(info, npu, target)).not.toHaveProperty('reason');

    const out = join(root, 'bundle');
    await compile({ bricks: dynamic, target: 'rk3588', out, rknn: 'skip', place: [{ brick: 'vision', accelerator: 'npu' }] });
    const bundle = JSON.parse(await readFile(join(out, 'bundle.json'), 'utf8'));
    const vision = bundle.bricks.find((b: { name: string }) => b.name === 'vision');
    const art = vision.artifacts.find((x: { kind: string }) => x.kind === 'rknn-onnx');
    expect(art.note).toContain('pixel_values [1, 3, 72, 72]');
    expect(art.note).toContain('height=72, width=72');

    // The NPU file computes what the brick computes on a 72×72 image (ORT on both).
    const px = new ort.Tensor('float32', detFloat(3 * 72 * 72, 0.7), [1, 3, 72, 72]);
    const [npuFile, orig] = await Promise.all([ort.InferenceSession.create(join(out, art.path)), ort.InferenceSession.create(join(fixed, vision.file))]);
    expect(npuFile.inputNames).toEqual(['pixel_values']);
    const [y, want] = await Promise.all([npuFile.run({ pixel_values: px }), orig.run({ pixel_values: px })]);
    expect(y.image_features!.dims).toEqual([1, 9, 128]);
    const a = y.image_features!.data as Float32Array, b = want.image_features!.data as Float32Array;
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i]!)))).toBeLessThan(1e-5);
    await Promise.all([npuFile.release(), orig.release()]);
  });
});
