/**
 * ort-webgpu on this machine's Vulkan (CI: Mesa's software lavapipe, Mesa ≥ 25, installed by .ci/run).
 *
 * Oracle: a plain onnxruntime-node CPU session opened in this test on the same brick file, fed the same
 * tensors. Every brick of the embedded model (models/shapes-vlm) as partitioned (fp32) and as quantized
 * (vision/audio fp16, decoder MatMulNBits 4-bit, accuracy_level 0) must agree with it within the tolerances below. The GPU
 * sessions are opened once per brick and reused (a first session compiles shaders).
 *
 * Then a bundle compiled with decoder and vision on the GPU: `run`, `bench`, `chat` and `eval` report ort-webgpu for those
 * bricks and eval keeps the model's bars (90 % typed, 80 % spoken) on a spread sample of the held-out set.
 */
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import type { TensorLike } from '../../src/run/backend.js';
import type { NanomindError } from '../../src/errors.js';
import type { BrickEntry } from '../../src/formats/bricks.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { ortWebgpu, probeWebgpu } from '../../src/run/backends/ort-webgpu.js';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { BIN, cli } from '../cli-helper.js';
import { detFloat } from '../run/helpers.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
/**
 * Max abs error allowed per brick, relative to max(1, max |CPU value|). fp32 kernels (and MatMulNBits with
 * accuracy_level 0, float compute on both sides) differ in summation order only: 1e-3. fp16 bricks compute
 * in half precision on the GPU while ORT's CPU kernels widen some ops to float: 2e-2 (measured ≤ 1.3e-2).
 */
const TOL = { fp32: { vision: 1e-3, audio: 1e-3, embed: 1e-3, decoder: 1e-3 }, lowbit: { vision: 2e-2, audio: 2e-2, embed: 1e-3, decoder: 1e-3 } } as const;

let root: string;
let fp32: string, lowbit: string;
const opened: BrickSet[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-webgpu-'));
  fp32 = join(root, 'sv');
  lowbit = join(root, 'sv-q');
  await partition({ input: MODEL, out: fp32 });
  await quantizeBricks({ dir: fp32, out: lowbit, recipe: 'fp32', overrides: { decoder: 'w4a16-g32', vision: 'fp16', audio: 'fp16' },
    calib: 2, heldOut: 1, algorithm: 'rtn', compareAlgorithms: false, newTokens: 0, evaluate: false, accuracyLevel: 0 });
});
afterAll(async () => {
  for (const s of opened) await s.close();
  if (root) await rm(root, { recursive: true, force: true });
});

/** One `chat --json` turn over stdin (the CLI as a user pipes it). */
async function chatJson(bundle: string, line: string): Promise<{ stats: { backends: Record<string, string> } }> {
  const { execFile } = await import('node:child_process');
  const stdout = await new Promise<string>((res, rej) => {
    const p = execFile(process.execPath, [BIN, 'chat', bundle, '--json', '--max-tokens', '4'], { env: { ...process.env, CI: 'true' } }, (e, so) => (e ? rej(e) : res(so)));
    p.stdin!.end(`${line}\n`);
  });
  return JSON.parse(stdout.trim().split('\n')[0]!);
}

/** Deterministic feeds for every input of a brick: past length 3, 2 new positions, images/audio as declared. */
function feedsFor(set: BrickSet, brick: string): Record<string, TensorLike> {
  const b = set.manifest.bricks.find((x) => x.name === brick)!;
  const size: Record<string, number> = { batch_size: 1, sequence_length: 2, past_sequence_length: 3, total_sequence_length: 5 };
  const feeds: Record<string, TensorLike> = {};
  for (const [k, i] of b.inputs.entries()) {
    const dims = (i.shape ?? []).map((d) => (typeof d === 'number' ? d : size[d as string] ?? 1));
    const n = dims.reduce((a, d) => a * d, 1);
    if (i.dtype === 'int64') {
      const v = i.name === 'attention_mask' ? () => 1n : i.name === 'position_ids' ? (j: number) => BigInt(3 + j) : (j: number) => BigInt((7 * j + 11) % 300);
      feeds[i.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, j) => v(j)), dims);
    } else {
      feeds[i.name] = new ort.Tensor('float32', detFloat(n, k + 0.3), dims);
    }
  }
  return feeds;
}

function maxAbs(a: TensorLike, b: TensorLike): { err: number; scale: number } {
  expect(a.dims).toEqual(b.dims);
  const x = a.data as Float32Array, y = b.data as Float32Array;
  let err = 0, scale = 1;
  for (let i = 0; i < x.length; i++) { err = Math.max(err, Math.abs(x[i]! - y[i]!)); scale = Math.max(scale, Math.abs(y[i]!)); }
  expect(Number.isFinite(err)).toBe(true);
  return { err, scale };
}

describe('ort-webgpu', () => {
  it('finds a WebGPU adapter on this machine and names the Vulkan device and driver', async () => {
    const p = await probeWebgpu();
    expect(p.reason).toBeUndefined();
    expect(p.ok).toBe(true);
    expect(p.adapter).toMatch(/\S/);
    expect(p.driver).toMatch(/\S/);
  });

  for (const [label, which, tol] of [['fp32', () => fp32, TOL.fp32], ['fp16 + MatMulNBits', () => lowbit, TOL.lowbit]] as const) {
    it(`every brick of the embedded model (${label}) on the GPU matches a plain ORT CPU session`, async () => {
      const dir = which();
      const gpu = await openBrickSet(dir, { backends: ['ort-webgpu'] });
      opened.push(gpu);
      expect(Object.values(gpu.placed).map((p) => p.backend)).toEqual(gpu.manifest.bricks.map(() => 'ort-webgpu'));
      for (const b of gpu.manifest.bricks) {
        const feeds = feedsFor(gpu, b.name);
        const cpu = await ort.InferenceSession.create(join(dir, b.file), { executionProviders: ['cpu'] });
        const want = await cpu.run(feeds as Record<string, ort.Tensor>);
        await cpu.release();
        const got = await gpu.run(b.name, feeds);
        for (const o of b.outputs) {
          const { err, scale } = maxAbs(got[o.name]!, want[o.name] as TensorLike);
          expect(err, `${b.name}.${o.name}: max abs error ${err} (scale ${scale})`).toBeLessThanOrEqual(tol[b.name as keyof typeof tol] * scale);
        }
      }
      // A preallocated output is filled with the same values the GPU returns.
      const v = gpu.encoder('vision');
      const px = feedsFor(gpu, v.chain[0]!.name);
      const plain = await gpu.encode('vision', px[v.input.name]!);
      const into = new Float32Array(plain.features.length);
      const direct = await gpu.encode('vision', px[v.input.name]!, { into });
      expect(direct.features.buffer).toBe(into.buffer);
      expect(Array.from(into)).toEqual(Array.from(plain.features));
    }, 300_000); // a fresh machine compiles every shader once (70 s for the fp16 set on lavapipe, cold cache)
  }

  it('a brick with a node no provider can run is one E_BACKEND_UNSUPPORTED naming the node', async () => {
    // Det over float64 has an ONNX schema but no kernel in ORT's WebGPU or CPU provider.
    const g = new GraphBuilder('det');
    const x = g.input('x', 'float64', [2, 2]);
    g.output(g.op('Det', [x], {}, { outputs: ['y'] }), 'float64', []);
    await writeFile(join(root, 'det.onnx'), toBinary(ModelProtoSchema, g.model({ opset: 18 })));
    const entry = { name: 'det', kind: 'vision', file: 'det.onnx', dataFiles: [], sha256: '', params: 0, bytes: 0, nodes: 1,
      inputs: [{ name: 'x', dtype: 'float64', shape: [2, 2] }], outputs: [{ name: 'y', dtype: 'float64', shape: [] }] } as unknown as BrickEntry;
    const e = await ortWebgpu.open(entry, root).then(() => undefined, (err: NanomindError) => err);
    expect(e?.code).toBe('E_BACKEND_UNSUPPORTED');
    expect(e?.message).toContain('Det');
  });

  it('compile --place decoder=gpu --place vision=gpu: run, bench, chat and eval use ort-webgpu for them; eval keeps the bars', async () => {
    const bundle = join(root, 'bundle');
    await compile({ bricks: fp32, target: 'rk3588', out: bundle, rknn: 'skip',
      place: [{ brick: 'decoder', accelerator: 'gpu' }, { brick: 'vision', accelerator: 'gpu' }] });
    const want = { vision: 'ort-webgpu', decoder: 'ort-webgpu', embed: 'ort-cpu', audio: 'ort-cpu' };
    // PyTorch's answer to typed-0000 (recorded at export), not a literal that each retraining may change
    const pytorch = (JSON.parse(await readFile(join(MODEL, 'eval', 'reference.json'), 'utf8')).answers as Record<string, string>)['typed-0000'];
    const run = await cli('run', bundle, '--image', join(MODEL, 'eval', 'images', 'typed-0000.png'), '--prompt', 'what color is the circle?', '--json');
    expect(run.code, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout);
    expect(r.stats.backends).toEqual(want);
    expect(r.text).toBe(pytorch);
    // No GPU brick fell back: the only notice allowed is about a brick the plan put on the NPU (no .rknn here).
    const notices = run.stderr.split('\n').filter((l) => l.startsWith('notice:'));
    expect(notices.filter((l) => !/placed on npu \(rknn\)/.test(l))).toEqual([]);
    expect(notices.join('\n')).not.toMatch(/'(vision|decoder)'|webgpu/);
    // An image stream with the vision encoder on the GPU encodes on the main thread (no worker: see run.ts).
    const images = join(root, 'images');
    await mkdir(images);
    for (const f of ['typed-0000.png', 'typed-0001.png']) await copyFile(join(MODEL, 'eval', 'images', f), join(images, f));
    const stream = await cli('run', bundle, '--images', images, '--prompt', 'what color is the circle?', '--json');
    expect(stream.code, stream.stderr).toBe(0);
    const st = JSON.parse(stream.stdout);
    expect(st.overlap).toBe(false);
    expect(st.answers.map((a: { stats: { backends: unknown } }) => a.stats.backends)).toEqual([want, want]);
    expect(st.answers[0].text).toBe(pytorch);
    const bench = await cli('bench', bundle, '--runs', '1', '--new-tokens', '4', '--prompt-tokens', '8', '--stream-images', '0', '--json');
    expect(bench.code, bench.stderr).toBe(0);
    expect(JSON.parse(bench.stdout).model.backends).toEqual(want);
    const chat = await chatJson(bundle, 'what color is the circle?');
    expect(chat.stats.backends).toEqual(want);
    const ev = await cli('eval', bundle, '--limit', '12', '--json');
    expect(ev.code, ev.stderr).toBe(0);
    const e = JSON.parse(ev.stdout);
    expect(e.backends).toEqual(want);
    expect(e.n).toBe(12);
    expect(e.accuracy.typed).toBeGreaterThanOrEqual(0.9);
    expect(e.accuracy.spoken).toBeGreaterThanOrEqual(0.8);
  }, 300_000);
});
