import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBricksManifest, type BricksManifest } from '../../src/formats/bricks.js';
import { loadModel, saveModel, sha256File } from '../../src/onnx/model-io.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { partition } from '../../src/partition/index.js';
import { verifyBricks } from '../../src/partition/verify.js';
import { interfaceOf } from '../../src/partition/brick-files.js';
import { buildTinyTextLm } from '../../src/fixtures/index.js';
import { cleanupFixtures, expectedParams, fixtureDir, tinyAudioConfig } from '../fixtures/index.js';
import { code } from '../error-codes.js';

const TORCH = join(import.meta.dirname, '..', 'fixtures', 'torch');
let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-partition-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

const byName = (m: BricksManifest) => Object.fromEntries(m.bricks.map((b) => [b.name, b]));

async function runsInOrt(dir: string, m: BricksManifest): Promise<void> {
  for (const b of m.bricks) {
    const s = await ort.InferenceSession.create(join(dir, b.file));
    expect(s.inputNames).toEqual(b.inputs.map((i) => i.name));
    expect(s.outputNames).toEqual(b.outputs.map((o) => o.name));
    await s.release();
  }
}

describe('monolithic graphs', () => {
  it('cuts the generated LLaVA graph into vision, embed and decoder bricks equivalent to the original', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const out = join(work, 'llava-mono');
    const { manifest: m } = await partition({ input: mono.file, out });
    const p = expectedParams();
    const b = byName(m);
    expect(Object.keys(b)).toEqual(['vision', 'embed', 'decoder']);
    expect([b.vision.params, b.embed.params, b.decoder.params]).toEqual([p.files['vision_encoder.onnx'], p.files['embed_tokens.onnx'], p.files['decoder_model_merged.onnx']]);
    expect(b.vision.inputs.map((i) => i.name)).toEqual(['pixel_values']);
    expect(b.vision.outputs.map((i) => i.name)).toEqual(['image_features']);
    expect(b.embed.outputs[0]).toMatchObject({ name: 'inputs_embeds', dtype: 'float32', shape: [1, 'sequence_length', 64] });
    expect(b.decoder.inputs.map((i) => i.name)).toEqual(['inputs_embeds', 'attention_mask']);
    expect(m.connections).toContainEqual({ from: 'vision.image_features', to: 'decoder.inputs_embeds', merge: { placeholderTokenId: 319, mode: 'replace-rows' } });
    expect(m.connections).toContainEqual({ from: 'embed.inputs_embeds', to: 'decoder.inputs_embeds' });
    expect(m.verify!.ok).toBe(true);
    expect(m.verify!.maxRelDiff).toBeLessThanOrEqual(1e-4);
    expect(m.verify!.outputs.map((o) => o.name)).toEqual(['logits']);
    for (const x of m.bricks) expect(await sha256File(join(out, x.file))).toBe(x.sha256);
    expect(await readBricksManifest(out)).toEqual(m);
    await runsInOrt(out, m);
  });

  it('--split-projector gives the projector its own brick with the exporter-scoped boundary', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const { manifest: m } = await partition({ input: mono.file, out: join(work, 'llava-mono-proj'), splitProjector: true });
    const b = byName(m);
    const p = expectedParams();
    expect(Object.keys(b)).toEqual(['vision', 'projector', 'embed', 'decoder']);
    expect([b.vision.params, b.projector.params]).toEqual([p.visionTower, p.projector]);
    expect(b.projector.inputs[0]).toMatchObject({ name: 'vision_hidden_states', dtype: 'float32', shape: [1, 16, 32] });
    expect(m.connections[0]).toEqual({ from: 'vision.vision_hidden_states', to: 'projector.vision_hidden_states' });
    expect(m.verify!.ok).toBe(true);
  });

  it('cuts the audio-LLM graph (Whisper-style encoder) and merges on the audio token', async () => {
    const mono = await fixtureDir('audio-monolithic');
    const { manifest: m } = await partition({ input: mono.file, out: join(work, 'audio-mono') });
    const b = byName(m);
    const p = expectedParams(tinyAudioConfig());
    expect(Object.keys(b)).toEqual(['audio', 'embed', 'decoder']);
    expect(b.audio.params).toBe(p.files['audio_encoder.onnx']);
    expect(b.audio.inputs[0].name).toBe('input_features');
    expect(m.connections).toContainEqual({ from: 'audio.audio_features', to: 'decoder.inputs_embeds', merge: { placeholderTokenId: 318, mode: 'replace-rows' } });
    expect(m.verify!.ok).toBe(true);
  });

  it.each([
    ['llava_tiny.onnx', ['vision', 'projector', 'embed', 'decoder'], 319],
    ['audio_llm_tiny.onnx', ['audio', 'audio_projector', 'embed', 'decoder'], 318],
  ])('handles graphs written by PyTorch’s exporter (%s)', async (file, names, token) => {
    const out = join(work, `torch-${file}`);
    const { manifest: m } = await partition({ input: join(TORCH, file), out, splitProjector: true });
    expect(m.bricks.map((x) => x.name)).toEqual(names);
    expect(m.connections.find((c) => c.merge)!.merge).toEqual({ mode: 'replace-rows', placeholderTokenId: token });
    expect(m.verify!.ok).toBe(true);
    expect(m.verify!.maxRelDiff).toBeLessThanOrEqual(1e-4);
    // Every brick holds only what it reads: no initializer appears in a brick that does not use it.
    const total = (await loadModel(join(TORCH, file))).model.graph!.initializer.length;
    let sum = 0;
    for (const x of m.bricks) sum += (await loadModel(join(out, x.file))).model.graph!.initializer.length;
    expect(sum).toBeLessThanOrEqual(total + 2);
    await runsInOrt(out, m);
  });

  it('keeps external data external, in a per-brick .onnx_data', async () => {
    const dir = join(work, 'ext-src');
    const { buildTinyLlavaMonolithic } = await import('../../src/fixtures/index.js');
    await buildTinyLlavaMonolithic(join(dir, 'model.onnx'), { externalThreshold: 1024 });
    const out = join(work, 'ext-bricks');
    const { manifest: m } = await partition({ input: join(dir, 'model.onnx'), out });
    for (const x of m.bricks) {
      expect(x.dataFiles).toEqual([`${x.name}.onnx_data`]);
      expect(x.bytes).toBeGreaterThan(1024);
    }
    expect((await readdir(out)).sort()).toEqual(['bricks.json', 'decoder.onnx', 'decoder.onnx_data', 'embed.onnx', 'embed.onnx_data', 'vision.onnx', 'vision.onnx_data']);
    expect(m.verify!.ok).toBe(true);
  });

  it('--external-data moves brick weights of a given size to .onnx_data', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const { manifest: m } = await partition({ input: mono.file, out: join(work, 'ext-flag'), externalData: 4096 });
    for (const x of m.bricks) expect(x.dataFiles).toEqual([`${x.name}.onnx_data`]);
    expect(m.verify!.ok).toBe(true);
  });

  it('verification catches a brick that no longer matches the original', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const out = join(work, 'tamper');
    const { manifest: m } = await partition({ input: mono.file, out, verify: false });
    expect(m.verify).toBeNull();
    const dec = await loadModel(join(out, 'decoder.onnx'));
    const w = dec.model.graph!.initializer.find((t) => t.name.includes('lm_head'))!;
    const f = new Float32Array(w.rawData.buffer.slice(w.rawData.byteOffset, w.rawData.byteOffset + w.rawData.length));
    f[0] += 5;
    w.rawData = new Uint8Array(f.buffer);
    await saveModel(dec.model, join(out, 'decoder.onnx'));
    const io = interfaceOf((await loadModel(mono.file)).model);
    const report = await verifyBricks({ original: { file: mono.file, ...io }, dir: out, bricks: m.bricks, connections: m.connections, vocabSize: 314 });
    expect(report.ok).toBe(false);
    expect(report.maxAbsDiff).toBeGreaterThan(1e-3);
  });
});

describe('split (onnx-community) folders', () => {
  it('adopts the files byte for byte with their interfaces, tokenizer and config', async () => {
    const llava = await fixtureDir('llava');
    const out = join(work, 'split');
    const { manifest: m } = await partition({ input: llava.dir, out });
    expect(m.model.layout).toBe('split');
    expect(m.bricks.map((x) => [x.name, x.file])).toEqual([['vision', 'vision_encoder.onnx'], ['embed', 'embed_tokens.onnx'], ['decoder', 'decoder_model_merged.onnx']]);
    for (const x of m.bricks) expect(x.sha256).toBe(await sha256File(join(llava.dir, 'onnx', x.file)));
    expect(m.sources.map((s) => s.sha256)).toEqual(m.bricks.map((x) => x.sha256));
    expect(m.files.map((f) => f.path).sort()).toEqual(['config.json', 'generation_config.json', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(byName(m).decoder.inputs.map((i) => i.name)).toContain('past_key_values.1.value');
    expect(m.connections).toContainEqual({ from: 'vision.image_features', to: 'decoder.inputs_embeds', merge: { placeholderTokenId: 319, mode: 'replace-rows' } });
    expect(m.verify).toBeNull();
  });

  it('--split-projector cuts the projector out of vision_encoder and verifies the pair', async () => {
    const llava = await fixtureDir('llava');
    const { manifest: m } = await partition({ input: llava.dir, out: join(work, 'split-proj'), splitProjector: true });
    expect(m.bricks.map((x) => x.name)).toEqual(['vision', 'projector', 'embed', 'decoder']);
    expect(m.verify!.ok).toBe(true);
    expect(m.verify!.outputs.map((o) => o.name)).toEqual(['image_features']);
  });

  it('--dtype picks a variant, falling back to the plain file for parts the variant lacks', async () => {
    const llava = await fixtureDir('llava');
    const dir = join(work, 'variants');
    await mkdir(join(dir, 'onnx'), { recursive: true });
    for (const f of ['vision_encoder', 'embed_tokens', 'decoder_model_merged']) await copyFile(join(llava.dir, 'onnx', `${f}.onnx`), join(dir, 'onnx', `${f}.onnx`));
    await copyFile(join(llava.dir, 'onnx', 'decoder_model_merged.onnx'), join(dir, 'onnx', 'decoder_model_merged_q4f16.onnx'));
    await copyFile(join(llava.dir, 'config.json'), join(dir, 'config.json'));
    const { manifest: m } = await partition({ input: dir, out: join(work, 'variant-out'), dtype: 'q4f16' });
    expect(m.bricks.map((x) => x.file)).toEqual(['vision_encoder.onnx', 'embed_tokens.onnx', 'decoder_model_merged_q4f16.onnx']);
    expect(await code(partition({ input: dir, out: join(work, 'variant-bad'), dtype: 'int8' }))).toBe('E_PARTITION_DTYPE');
    // q4f16 prefers an fp16 file to the plain one where it lacks its own (the rule pull fetches by).
    await copyFile(join(llava.dir, 'onnx', 'embed_tokens.onnx'), join(dir, 'onnx', 'embed_tokens_fp16.onnx'));
    const { manifest: h } = await partition({ input: dir, out: join(work, 'variant-out-fp16'), dtype: 'q4f16' });
    expect(h.bricks.map((x) => x.file)).toEqual(['vision_encoder.onnx', 'embed_tokens_fp16.onnx', 'decoder_model_merged_q4f16.onnx']);
  });

  it('a text-only decoder folder (decoder taking input_ids) is a one-brick model', async () => {
    const lm = await buildTinyTextLm(join(work, 'text-lm'));
    const { manifest: m } = await partition({ input: lm.dir, out: join(work, 'text-lm-out') });
    expect(m.bricks.map((x) => [x.name, x.kind, x.params])).toEqual([['decoder', 'decoder', lm.params]]);
    expect(m.bricks[0].inputs[0].name).toBe('input_ids');
    expect(m.connections).toEqual([]);
  });
});

describe('inspect', () => {
  it('reports exact parameter counts, ops and bricks for a monolithic graph', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const r = await inspectModel(mono.file);
    const p = expectedParams();
    expect(r.params).toBe(p.total);
    expect(r.files[0].ops.MatMul).toBeGreaterThan(10);
    expect(r.files[0].opsets['ai.onnx']).toBe(17);
    expect(r.bricks.map((b) => [b.name, b.params])).toEqual([['vision', p.files['vision_encoder.onnx']], ['embed', p.files['embed_tokens.onnx']], ['decoder', p.files['decoder_model_merged.onnx']]]);
    const dec = r.bricks.find((b) => b.kind === 'decoder')!;
    // Per-token decoder FLOPs = 2 × MatMul weights: everything but the RMSNorm weights (2 per layer + final)
    // and the q/k/v biases (64 + 2 × 32 per layer); the embedding table is a lookup.
    const norms = 2 * 2 * 64 + 64;
    const biases = 2 * (64 + 2 * 32);
    expect(dec.flops.value).toBe(2 * (p.files['decoder_model_merged.onnx'] - norms - biases));
    expect(r.bricks.find((b) => b.kind === 'vision')!.flops.value).toBeGreaterThan(2 * p.files['vision_encoder.onnx']);
  });

  it('inspects a split folder file by file', async () => {
    const audio = await fixtureDir('audio');
    const r = await inspectModel(audio.dir);
    const p = expectedParams(tinyAudioConfig());
    expect(r.layout).toBe('split');
    expect(r.bricks.map((b) => [b.kind, b.params])).toEqual([['audio', p.files['audio_encoder.onnx']], ['embed', p.files['embed_tokens.onnx']], ['decoder', p.files['decoder_model_merged.onnx']]]);
    expect(r.params).toBe(p.files['audio_encoder.onnx'] + p.files['embed_tokens.onnx'] + p.files['decoder_model_merged.onnx']);
  });
});

describe('bad input', () => {
  it('fails with one clear error and writes nothing', async () => {
    const bad = join(work, 'bad.onnx');
    await writeFile(bad, 'not a model');
    const out = join(work, 'never');
    expect(await code(partition({ input: bad, out }))).toBe('E_ONNX_PARSE');
    expect(await code(partition({ input: join(work, 'missing.onnx'), out }))).toBe('E_FILE_NOT_FOUND');
    const mono = await fixtureDir('llava-monolithic');
    expect(await code(partition({ input: mono.file, out, cuts: { vision: 'no_such_tensor' } }))).toBe('E_PARTITION_CUT');
    // A cut that leaves the decoder reading input_ids is not closed.
    expect(await code(partition({ input: mono.file, out, cuts: { decoder: '/language_model/embed_tokens/Gather_output_0' } }))).toBe('E_PARTITION_CUT');
    expect((await readdir(work)).filter((f) => f.startsWith('.never') || f === 'never')).toEqual([]);
  });

  it('refuses to overwrite a directory that is not a brick set', async () => {
    const out = join(work, 'precious');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'thesis.tex'), 'do not delete');
    const mono = await fixtureDir('llava-monolithic');
    expect(await code(partition({ input: mono.file, out }))).toBe('E_OUTPUT_EXISTS');
    expect(await readFile(join(out, 'thesis.tex'), 'utf8')).toBe('do not delete');
  });

  it('two candidate encoder outputs are reported as ambiguous with the candidates, and --cut settles it', async () => {
    const { GraphBuilder } = await import('../../src/onnx/builder.js');
    const g = new GraphBuilder();
    const px = g.input('pixel_values', 'float32', [1, 3, 4, 4]);
    const ids = g.input('input_ids', 'int64', [1, 'sequence_length']);
    const a = g.op('ReduceMean', [g.op('Relu', [px])], { keepdims: 0 }, { outputs: ['feat_a'] });
    const b = g.op('ReduceMean', [g.op('Sigmoid', [px])], { keepdims: 0 }, { outputs: ['feat_b'] });
    const emb = g.op('Gather', [g.init('embed_tokens.weight', [10, 8], Float32Array.from({ length: 80 }, (_, i) => i / 80)), ids], { axis: 0 });
    const merged = g.op('Add', [g.op('Add', [emb, a]), b]);
    g.output(g.op('MatMul', [merged, g.init('lm_head.weight', [8, 10], Float32Array.from({ length: 80 }, (_, i) => (i % 7) / 7))], {}, { outputs: ['logits'] }), 'float32', [1, 'sequence_length', 10]);
    const file = join(work, 'ambiguous.onnx');
    await saveModel(g.model(), file);
    const err = await partition({ input: file, out: join(work, 'amb-out') }).catch((e) => e);
    expect(err.code).toBe('E_PARTITION_AMBIGUOUS');
    expect([...err.detail.notes].sort()).toEqual(['feat_a', 'feat_b']);
    expect(err.detail.hint).toContain('--cut vision=');
  });

  it('a graph without language-model inputs is reported, not guessed', async () => {
    const { GraphBuilder } = await import('../../src/onnx/builder.js');
    const g = new GraphBuilder();
    g.output(g.op('Relu', [g.input('x', 'float32', [1, 4])]), 'float32', [1, 4]);
    const file = join(work, 'relu.onnx');
    await saveModel(g.model(), file);
    expect(await code(partition({ input: file, out: join(work, 'relu-out') }))).toBe('E_PARTITION_NO_BRICKS');
  });
});
