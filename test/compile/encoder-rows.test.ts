/**
 * TABM ring slots are sized from the rows each encoder really emits. Oracles: ONNX Runtime running the
 * encoder brick on a processor-sized input (rows = elements / hidden of what it returns), and the model's
 * own config.json (`image_seq_length`, `audio_seq_length`), which the sizing code does not read when
 * the graph tells.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { encoderRows, rowsOfShape } from '../../src/compile/encoder-rows.js';
import { readBricksManifest, type BrickEntry } from '../../src/formats/bricks.js';
import { noKvCacheNotice } from '../../src/formats/kv-cache.js';
import { loadModel } from '../../src/onnx/model-io.js';
import { partition } from '../../src/partition/index.js';

const SHAPES = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-rows-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

/** Rows per image / clip as ORT computes them on an input of the processor's size. */
async function ortRows(file: string, input: string, dims: number[]): Promise<number> {
  const s = await ort.InferenceSession.create(file);
  try {
    const out = Object.values(await s.run({ [input]: new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims) }))[0];
    return out.dims.slice(0, -1).reduce((a, b) => a * b, 1);
  } finally { await s.release(); }
}

describe('ring slots from the encoders\' real rows (models/shapes-vlm)', () => {
  it.each([['split folder', SHAPES], ['monolithic folder', join(SHAPES, 'monolithic')]])('%s', async (name, input) => {
    const bricks = join(work, `bricks-${name}`);
    await partition({ input, out: bricks, verify: false });
    const { plan, manifest } = await compile({ bricks, target: 'rk3588', out: join(work, `bundle-${name}`), rknn: 'skip' });
    const config = JSON.parse(await readFile(join(SHAPES, 'config.json'), 'utf8'));
    const pre = JSON.parse(await readFile(join(SHAPES, 'preprocessor_config.json'), 'utf8'));
    const m = await readBricksManifest(bricks);
    const file = (kind: string) => join(bricks, m.bricks.find((b) => b.kind === kind)!.file);
    const visionRows = await ortRows(file('vision'), 'pixel_values', [1, 3, pre.size.height, pre.size.width]);
    const audioRows = await ortRows(file('audio'), 'input_features', [1, pre.feature_size, pre.nb_max_frames]);
    expect([visionRows, audioRows]).toEqual([config.image_seq_length, config.audio_seq_length]);
    const hidden = config.text_config.hidden_size;
    const ring = (from: string) => plan.ringBuffers.find((r) => r.from === from)!;
    expect(plan.ringBuffers.map((r) => [r.from, r.tokens, r.hidden, r.slotBytes])).toEqual([
      ['vision.image_features', visionRows, hidden, visionRows * hidden * 4],
      ['audio.audio_features', audioRows, hidden, audioRows * hidden * 4],
    ]);
    for (const from of ['vision.image_features', 'audio.audio_features']) expect(ring(from).tokensFrom).toMatch(/shape/);
    // plan.json on disk says the same.
    const onDisk = JSON.parse(await readFile(join(work, `bundle-${name}`, 'plan.json'), 'utf8'));
    expect(onDisk.ringBuffers.map((r: { tokens: number; tokensFrom: string }) => [r.tokens, typeof r.tokensFrom])).toEqual([[visionRows, 'string'], [audioRows, 'string']]);
    // The monolithic export has no KV cache: compile says so.
    const kv = noKvCacheNotice(m.bricks);
    expect(manifest.notes.includes(kv!)).toBe(name === 'monolithic folder');
  });
});

describe('encoderRows', () => {
  it('reads flattened and batched shapes', () => {
    expect(rowsOfShape(['batch_size', 9, 128])).toBe(9);
    expect(rowsOfShape(['9*batch_size', 128])).toBe(9);
    expect(rowsOfShape(['batch_size*25', 128])).toBe(25);
    expect(rowsOfShape([1, 4, 4, 64])).toBe(16);
    expect(rowsOfShape(['batch_size', 'num_patches', 128])).toBeUndefined();
    expect(rowsOfShape([128])).toBeUndefined();
  });

  it('falls back to the processor\'s image size, then to config counts, saying which', async () => {
    const vision = join(SHAPES, 'onnx', 'vision_encoder.onnx');
    const graph = (await loadModel(vision)).model.graph!;
    // As a fully dynamic export declares it: no static input dims, a symbolic row dim.
    const entry = {
      name: 'vision', kind: 'vision', file: 'vision_encoder.onnx',
      inputs: [{ name: 'pixel_values', dtype: 'float32', shape: ['batch_size', 'num_channels', 'height', 'width'] }],
      outputs: [{ name: 'image_features', dtype: 'float32', shape: ['batch_size', 'num_image_tokens', 128] }],
    } as unknown as BrickEntry;
    const pre = JSON.parse(await readFile(join(SHAPES, 'preprocessor_config.json'), 'utf8'));
    const config = JSON.parse(await readFile(join(SHAPES, 'config.json'), 'utf8'));
    const a = encoderRows(entry, graph, { config, preprocessor: pre });
    expect(a?.rows).toBe(await ortRows(vision, 'pixel_values', [1, 3, 72, 72]));
    expect(a?.from).toMatch(/preprocessor_config\.json/);
    // The graph gives nothing (a projector brick: its input is not what the processor makes): config counts.
    const b = encoderRows({ ...entry, kind: 'projector' } as BrickEntry, graph, { config, preprocessor: pre });
    expect(b).toEqual({ rows: config.image_seq_length, from: 'config.json image_seq_length' });
    const c = encoderRows({ ...entry, kind: 'projector' } as BrickEntry, graph, { config: { vision_config: { image_size: 32, patch_size: 8 } } });
    expect(c?.rows).toBe(16);
    expect(encoderRows({ ...entry, kind: 'projector' } as BrickEntry, graph, {})).toBeUndefined();
  });
});
