import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import { openModel } from '../../src/run/model.js';
import { readNpyFile } from '../../src/run/inputs/npy.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { probeRknnToolkit } from '../../src/compile/rknn.js';
import { readBricksManifest } from '../../src/formats/bricks.js';
import { readBundle } from '../../src/formats/bundle.js';
import { sha256File } from '../../src/onnx/model-io.js';
import { partition } from '../../src/partition/index.js';
import { mulberry32 } from '../../src/util/prng.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';

let work: string;
let bricks: string;
let bundle: string;
let calib: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-compile-'));
  bricks = join(work, 'bricks');
  await partition({ input: (await fixtureDir('llava')).dir, out: bricks });
  // rknn-toolkit2 calibrates the int8 conversion on real images (never made-up ones)
  calib = join(work, 'calib');
  await mkdir(calib, { recursive: true });
  for (const [k, [w, h]] of ([[40, 30], [32, 48], [64, 64]] as const).entries()) {
    const px = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([(x * 255) / w, (y * 255) / h, (k * 70 + x * y) % 256], (y * w + x) * 3);
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(join(calib, `img-${k}.png`));
  }
  bundle = join(work, 'bundle');
  await compile({ bricks, target: 'rk3588', out: bundle, place: [{ brick: 'vision', accelerator: 'npu', format: 'w8a8' }], calib });
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

const corrupt = async (name: string, edit: (m: any, dir: string) => Promise<void> | void) => {
  const dir = join(work, name);
  await cp(bundle, dir, { recursive: true });
  const m = JSON.parse(await readFile(join(dir, 'bundle.json'), 'utf8'));
  await edit(m, dir);
  await writeFile(join(dir, 'bundle.json'), JSON.stringify(m));
  return dir;
};

describe('compile → bundle', () => {
  it('writes a bundle that validates, with every brick file and matching sha256', async () => {
    const b = await readBundle(bundle);
    const src = await readBricksManifest(bricks);
    expect(b.manifest.bricks.map((x) => x.name)).toEqual(src.bricks.map((x) => x.name));
    for (const x of b.manifest.bricks) {
      expect(x.sha256).toBe(src.bricks.find((y) => y.name === x.name)!.sha256);
      expect(await sha256File(join(bundle, x.file))).toBe(x.sha256);
    }
    for (const f of ['tokenizer.json', 'config.json', 'bricks.json']) expect(b.manifest.files.map((x) => x.path)).toContain(f);
    expect(b.manifest.target.name).toBe('rk3588');
    expect(b.plan.estimate).toBe(true);
    expect(b.manifest.bricks.find((x) => x.name === 'vision')).toMatchObject({ accelerator: 'npu', backend: 'rknn', format: 'w8a8' });
    expect(b.plan.memory.domains).toEqual([expect.objectContaining({ baseDomainId: 0, accelerator: 'npu', bricks: ['vision'] })]);
    const ring = b.plan.ringBuffers[0];
    expect(ring).toMatchObject({ from: 'vision.image_features', to: 'decoder.inputs_embeds', tokens: 16, hidden: 64, dtype: 'float32', slotBytes: 16 * 64 * 4 });
    expect(Object.isFrozen(b.manifest.bricks[0])).toBe(true);
    // The copied brick set is itself a valid brick set, so brick-set tools can open a bundle.
    expect((await readBricksManifest(bundle)).bricks.length).toBe(3);
  });

  it('lowers the NPU brick to a static-shape ONNX that ONNX Runtime runs with the same result as the brick', async () => {
    const b = await readBundle(bundle);
    const v = b.manifest.bricks.find((x) => x.name === 'vision')!;
    const rk = v.artifacts.find((a) => a.kind === 'rknn-onnx')!;
    const a = await ort.InferenceSession.create(join(bundle, v.file));
    const s = await ort.InferenceSession.create(join(bundle, rk.path!));
    const rand = mulberry32(7);
    const x = new ort.Tensor('float32', Float32Array.from({ length: 3 * 32 * 32 }, () => rand() * 2 - 1), [1, 3, 32, 32]);
    const [ya, ys] = [(await a.run({ pixel_values: x })).image_features, (await s.run({ pixel_values: x })).image_features];
    expect(ys.dims).toEqual([1, 16, 64]);
    // Static shapes let ORT pick other kernels: equal up to float32 rounding.
    const da = ya.data as Float32Array, ds = ys.data as Float32Array;
    const scale = Math.max(...Array.from(da, Math.abs));
    expect(Math.max(...Array.from(da, (q, i) => Math.abs(q - ds[i]))) / scale).toBeLessThan(1e-5);
    await a.release(); await s.release();
    expect((await readFile(join(bundle, 'calibration/vision/dataset.txt'), 'utf8')).trim().split('\n')).toEqual([0, 1, 2].map((k) => `calibration/vision/${k}_pixel_values.npy`));
    // each sample is the image as the model's own processor prepares it (what the NPU will be fed)
    const m = await openModel(bricks);
    for (const k of [0, 1, 2]) {
      const want = (await m.mediaInput('image', { file: join(calib, `img-${k}.png`) })) as unknown as { data: Float32Array; dims: readonly number[] };
      const got = await readNpyFile(join(bundle, `calibration/vision/${k}_pixel_values.npy`));
      expect(got.shape).toEqual([...want.dims]);
      expect(Float32Array.from(got.data as Float32Array)).toEqual(want.data);
    }
    await m.close();
    const script = await readFile(join(bundle, 'convert_rknn.py'), 'utf8');
    expect(script).toContain("target_platform=TARGET");
    expect(script).toContain('"vision_encoder.rknn.onnx", "vision_encoder.rknn", True, "calibration/vision/dataset.txt", ["pixel_values"], [[1,3,32,32]]');
    const rknn = v.artifacts.find((a2) => a2.kind === 'rknn')!;
    expect(rknn.status).toBe((await probeRknnToolkit()).ok ? 'ready' : 'needs-conversion');
    if (rknn.status === 'needs-conversion') expect(b.manifest.notes.join('\n')).toMatch(/convert_rknn\.py/);
  });

  it('without --calib: a float brick goes to the NPU in fp16, and a forced int8 conversion is refused', async () => {
    const r = await compile({ bricks, target: 'rk3588', out: join(work, 'no-calib'), place: [{ brick: 'vision', accelerator: 'npu' }], rknn: 'skip' });
    expect(r.manifest.bricks.find((x) => x.name === 'vision')).toMatchObject({ accelerator: 'npu', format: 'fp16' });
    expect(r.manifest.bricks.flatMap((x) => x.artifacts).some((a) => a.kind === 'calibration')).toBe(false);
    await expect(compile({ bricks, target: 'rk3588', out: join(work, 'never'), place: [{ brick: 'vision', accelerator: 'npu', format: 'w8a8' }] }))
      .rejects.toMatchObject({ code: 'E_COMPILE_CALIB' });
  });

  it('compiles for the host profile too (energy unknown there)', async () => {
    const out = join(work, 'host-bundle');
    const r = await compile({ bricks, target: 'host', out });
    expect(new Set(r.placement.bricks.map((b) => b.accelerator))).toEqual(new Set(['cpu']));
    expect(r.plan.predicted.energyMj).toBeNull();
    expect(r.plan.assumptions.join('\n')).toMatch(/no power figures/);
  });
});

describe('corrupt bundles', () => {
  it('missing file → E_BUNDLE_MISSING_FILE', async () => {
    const dir = await corrupt('missing', async (_m, d) => { await rm(join(d, 'embed_tokens.onnx')); });
    await expect(readBundle(dir)).rejects.toMatchObject({ code: 'E_BUNDLE_MISSING_FILE' });
  });
  it('sha256 mismatch → E_BUNDLE_HASH', async () => {
    const dir = await corrupt('hash', async (_m, d) => { const f = join(d, 'tokenizer.json'); const t = await readFile(f, 'utf8'); await writeFile(f, t.replace('{', '{ ')); });
    await expect(readBundle(dir)).rejects.toMatchObject({ code: 'E_BUNDLE_HASH' });
    await expect(readBundle(dir, { checkHashes: false })).resolves.toBeDefined();
  });
  it('a path leaving the bundle → E_BUNDLE_PATH', async () => {
    for (const p of ['../outside.onnx', '/etc/passwd', 'a/../../b']) {
      const dir = await corrupt(`escape-${p.length}`, (m) => { m.bricks[0].file = p; });
      await expect(readBundle(dir)).rejects.toMatchObject({ code: 'E_BUNDLE_PATH' });
    }
  });
  it('a newer format version → E_BUNDLE_VERSION', async () => {
    const dir = await corrupt('newer', (m) => { m.version = 2; });
    await expect(readBundle(dir)).rejects.toMatchObject({ code: 'E_BUNDLE_VERSION' });
  });
  it('bad fields → E_BUNDLE_INVALID listing every problem', async () => {
    const dir = await corrupt('invalid', (m) => { m.bricks[0].sha256 = 'xyz'; m.bricks[1].backend = 'tpu'; delete m.bricks[2].memory; m.connections[0].from = 'nobrick.x'; });
    const err = await readBundle(dir).catch((e) => e);
    expect(err.code).toBe('E_BUNDLE_INVALID');
    expect(err.detail.notes.length).toBe(4);
  });
});

describe('RKNN lowering of int64 inputs', () => {
  it('feeds int32 and casts back inside, with the same result under ONNX Runtime', async () => {
    const { GraphBuilder } = await import('../../src/onnx/builder.js');
    const { saveModel } = await import('../../src/onnx/model-io.js');
    const { writeRknnOnnx } = await import('../../src/compile/rknn.js');
    const dir = join(work, 'int64');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir, { recursive: true });
    const g = new GraphBuilder('emb');
    const table = g.init('table', [10, 3], Float32Array.from({ length: 30 }, (_, i) => i / 7));
    g.op('Gather', [table, g.input('input_ids', 'int64', ['batch_size', 4])], {}, { outputs: ['inputs_embeds'] });
    g.output('inputs_embeds', 'float32', ['batch_size', 4, 3]);
    await saveModel(g.model({ opset: 17 }), join(dir, 'e.onnx'));
    const entry = { name: 'e', kind: 'embed', file: 'e.onnx', dataFiles: [], sha256: '0'.repeat(64), params: 30, bytes: 120, nodes: 1,
      inputs: [{ name: 'input_ids', dtype: 'int64', shape: ['batch_size', 4] }], outputs: [{ name: 'inputs_embeds', dtype: 'float32', shape: ['batch_size', 4, 3] }] } as const;
    const r = await writeRknnOnnx(dir, { entry } as never, dir, 19);
    expect(r.inputs).toEqual([{ name: 'input_ids_int32', shape: [1, 4] }]);
    const a = await ort.InferenceSession.create(join(dir, 'e.onnx'));
    const s = await ort.InferenceSession.create(join(dir, r.file));
    const ids = [3, 0, 9, 4];
    const ya = (await a.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, 4]) })).inputs_embeds;
    const ys = (await s.run({ input_ids_int32: new ort.Tensor('int32', Int32Array.from(ids), [1, 4]) })).inputs_embeds;
    expect(Array.from(ys.data as Float32Array)).toEqual(Array.from(ya.data as Float32Array));
    await a.release(); await s.release();
    await expect(writeRknnOnnx(dir, { entry: { ...entry, inputs: [{ name: 'input_ids', dtype: 'int64', shape: ['batch_size', 'sequence_length'] }] } } as never, dir, 19)).rejects.toMatchObject({ code: 'E_RKNN_SHAPE' });
    await expect(writeRknnOnnx(dir, { entry } as never, dir, 13)).rejects.toMatchObject({ code: 'E_RKNN_OPSET' });
  });
});
