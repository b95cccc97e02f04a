/**
 * Model intake: every layout in the repo is detected the same way by `inspect` and `partition`; folders
 * that are no known layout (or encoder-decoder exports) are refused with one code; unused files are named.
 * Oracles: ONNX Runtime through partition's own verification (brick chain ≡ original graph), parameter
 * counts computed from the fixture configs in float arithmetic (blocks.ts `decoderParams` / `embedParams`,
 * independent of the graphs), and for agreement, each command against the other on the same input.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BricksManifest } from '../../src/formats/bricks.js';
import { noKvCacheNotice } from '../../src/formats/kv-cache.js';
import { loadModel, saveModel } from '../../src/onnx/model-io.js';
import { interfaceOf } from '../../src/partition/brick-files.js';
import { partition } from '../../src/partition/index.js';
import { inspectModel, type InspectReport } from '../../src/partition/inspect.js';
import { KNOWN_LAYOUTS } from '../../src/partition/model-input.js';
import { runnableDir } from '../../src/partition/runnable.js';
import { CACHED_STEP, verifyBricks } from '../../src/partition/verify.js';
import { isEncoderDecoderLayout } from '../../src/partition/split-layout.js';
import { openModel } from '../../src/run/model.js';
import { buildTinyTextLm, decoderParams, embedParams } from '../../src/fixtures/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { code } from '../error-codes.js';

const SHAPES = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
let work: string;
let n = 0;
const out = () => join(work, `out-${n++}`);
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-layouts-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

const summary = (b: { name: string; kind: string; inputs: readonly { name: string }[]; outputs: readonly { name: string }[]; params: number }) =>
  [b.name, b.kind, b.inputs.map((i) => i.name), b.outputs.map((o) => o.name), b.params];

describe('monolithic graphs with more than 32 inputs', () => {
  it('cuts a 24-layer graph with the KV cache in and out (52 inputs) and the chain verifies against it in ORT', async () => {
    const kv = await fixtureDir('llava-monolithic-kv');
    const io = interfaceOf((await loadModel(kv.file)).model);
    const past = Array.from({ length: 24 }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat();
    const present = past.map((p) => p.replace('past_key_values', 'present'));
    expect(io.inputs.map((i) => i.name)).toEqual(['pixel_values', 'input_ids', 'attention_mask', 'position_ids', ...past]);

    const { manifest: m, notes } = await partition({ input: kv.file, out: out() });
    const t = kv.config.text;
    expect(m.bricks.map(summary)).toEqual([
      ['vision', 'vision', ['pixel_values'], ['image_features'], kv.params.files['vision_encoder.onnx']],
      ['embed', 'embed', ['input_ids'], ['inputs_embeds'], embedParams(t)],
      ['decoder', 'decoder', ['inputs_embeds', 'attention_mask', 'position_ids', ...past], ['logits', ...present], decoderParams(t)],
    ]);
    expect(m.verify!.ok).toBe(true);
    expect(m.verify!.maxRelDiff).toBeLessThanOrEqual(1e-4);
    // Both the prompt (empty past) and one more token on top of each side's own cache.
    expect(m.verify!.outputs.map((o) => o.name)).toEqual([...['logits', ...present], ...['logits', ...present].map((x) => `${x}${CACHED_STEP}`)]);
    // It keeps a cache, so no re-prefill notice.
    expect(noKvCacheNotice(m.bricks)).toBeUndefined();
    expect(notes.filter((x) => x === noKvCacheNotice([{ name: 'decoder', kind: 'decoder', inputs: [] }]))).toEqual([]);
  });

  it('verification catches a past input wired to the wrong layer (only the cached step can)', async () => {
    const kv = await fixtureDir('llava-monolithic-kv');
    const dir = out();
    const { manifest: m } = await partition({ input: kv.file, out: dir, verify: false });
    const dec = await loadModel(join(dir, 'decoder.onnx'));
    const [a, b] = ['past_key_values.0.key', 'past_key_values.1.key'];
    for (const node of dec.model.graph!.node) node.input = node.input.map((i) => (i === a ? b : i === b ? a : i));
    await saveModel(dec.model, join(dir, 'decoder.onnx'));
    const report = await verifyBricks({ original: { file: kv.file, ...interfaceOf((await loadModel(kv.file)).model) }, dir, bricks: m.bricks, connections: m.connections, vocabSize: kv.config.text.vocab });
    expect(report.ok).toBe(false);
    const bad = report.outputs.filter((o) => o.maxRelDiff > 1e-4).map((o) => o.name);
    expect(bad.length).toBeGreaterThan(0);
    expect(bad.every((x) => x.endsWith(CACHED_STEP))).toBe(true);
  });
});

describe('inspect and partition agree on every layout', () => {
  const FOUR = ['vision', 'audio', 'embed', 'decoder'];
  const cases: [string, () => Promise<string>, string[], 'split' | 'monolithic', boolean?][] = [
    ['models/shapes-vlm (split folder)', async () => SHAPES, FOUR, 'split'],
    ['models/shapes-vlm/monolithic (folder)', async () => join(SHAPES, 'monolithic'), FOUR, 'monolithic'],
    ['models/shapes-vlm/monolithic/model.onnx (file)', async () => join(SHAPES, 'monolithic', 'model.onnx'), FOUR, 'monolithic'],
    ['llava fixture split folder', async () => (await fixtureDir('llava')).dir, ['vision', 'embed', 'decoder'], 'split'],
    ['llava fixture split folder, --split-projector', async () => (await fixtureDir('llava')).dir, ['vision', 'projector', 'embed', 'decoder'], 'split', true],
    ['llava fixture monolithic file', async () => (await fixtureDir('llava-monolithic')).file, ['vision', 'embed', 'decoder'], 'monolithic'],
    ['llava fixture monolithic folder, --split-projector', async () => (await fixtureDir('llava-monolithic')).dir, ['vision', 'projector', 'embed', 'decoder'], 'monolithic', true],
    ['llava fixture with-KV monolithic folder', async () => (await fixtureDir('llava-monolithic-kv')).dir, ['vision', 'embed', 'decoder'], 'monolithic'],
    ['audio (whisper-style encoder) fixture split folder', async () => (await fixtureDir('audio')).dir, ['audio', 'embed', 'decoder'], 'split'],
    ['audio fixture monolithic folder', async () => (await fixtureDir('audio-monolithic')).dir, ['audio', 'embed', 'decoder'], 'monolithic'],
    ['text-lm folder', async () => (await buildTinyTextLm(join(work, 'text-lm'))).dir, ['decoder'], 'split'],
  ];
  it.each(cases)('%s', async (_, path, names, layout, splitProjector) => {
    const input = await path();
    const r: InspectReport = await inspectModel(input, { splitProjector });
    // Detection is what must agree; verification of the cuts is covered above, in partition.test.ts and the CLI test.
    const { manifest: m }: { manifest: BricksManifest } = await partition({ input, out: out(), splitProjector, verify: false });
    expect(r.error).toBeUndefined();
    expect(m.bricks.map((b) => b.name)).toEqual(names);
    expect(r.bricks.map(summary)).toEqual(m.bricks.map(summary));
    expect([r.layout, m.model.layout]).toEqual([layout, layout]);
  });
});

/** A folder holding copies of fixture files under the given names (`onnx/x.onnx` ← source). */
async function folder(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(work, name);
  for (const [to, from] of Object.entries(files)) {
    await mkdir(join(dir, to, '..'), { recursive: true });
    await copyFile(from, join(dir, to));
  }
  return dir;
}

describe('folders that are no layout nanomind knows', () => {
  it('encoder-decoder exports nanomind cannot adopt (a decoder without cross-attention inputs; vision + embed files beside an encoder that is no text encoder) are refused, not adopted as a text decoder without the encoder', async () => {
    const a = await fixtureDir('audio');
    const l = await fixtureDir('llava');
    const whisper = await folder('whisper', {
      'onnx/encoder_model.onnx': a.files.audioEncoder, 'onnx/decoder_model_merged.onnx': a.files.decoder,
      'onnx/decoder_model_merged_q4.onnx': a.files.decoder, 'config.json': a.files.config,
    });
    const florence = await folder('florence', {
      'onnx/vision_encoder.onnx': l.files.visionEncoder, 'onnx/embed_tokens.onnx': l.files.embedTokens,
      'onnx/encoder_model.onnx': a.files.audioEncoder, 'onnx/decoder_model_merged.onnx': l.files.decoder, 'config.json': l.files.config,
    });
    for (const dir of [whisper, florence]) {
      expect(await isEncoderDecoderLayout(dir)).toBe(true);
      expect(await code(partition({ input: dir, out: out() }))).toBe('E_PARTITION_ENCODER_DECODER');
      expect(await code(inspectModel(dir))).toBe('E_PARTITION_ENCODER_DECODER');
      // run / chat / eval adopt a model folder through partition: the same refusal.
      expect(await code(runnableDir(dir))).toBe('E_PARTITION_ENCODER_DECODER');
    }
    for (const dir of [l.dir, a.dir, SHAPES, join(SHAPES, 'monolithic')]) expect(await isEncoderDecoderLayout(dir)).toBe(false);
    // Only the decoder files (as `pull` fetches them), but config.json says encoder-decoder.
    const decoderOnly = await folder('whisper-pulled', { 'onnx/decoder_model_merged.onnx': a.files.decoder, 'onnx/embed_tokens.onnx': a.files.embedTokens });
    await writeFile(join(decoderOnly, 'config.json'), JSON.stringify({ model_type: 'whisper', is_encoder_decoder: true }));
    expect(await isEncoderDecoderLayout(decoderOnly)).toBe(true);
    expect(await code(partition({ input: decoderOnly, out: out() }))).toBe('E_PARTITION_ENCODER_DECODER');
  });

  it('an empty folder, unrelated graphs, or a split folder with a file it would drop: one error listing the known layouts', async () => {
    const l = await fixtureDir('llava');
    const mono = await fixtureDir('llava-monolithic');
    const empty = join(work, 'empty');
    await mkdir(empty, { recursive: true });
    await writeFile(join(empty, 'README.md'), 'no model here');
    const two = await folder('two-graphs', { 'a.onnx': mono.file, 'b.onnx': l.files.decoder });
    // Phi-3.5-vision style: a part nanomind has no role for.
    const extra = await folder('extra-part', {
      'onnx/vision_encoder.onnx': l.files.visionEncoder, 'onnx/embed_tokens.onnx': l.files.embedTokens,
      'onnx/decoder_model_merged.onnx': l.files.decoder, 'onnx/prepare_inputs_embeds.onnx': l.files.embedTokens, 'config.json': l.files.config,
    });
    // The vision encoder exists only as fp16 while fp32 is chosen: it would be dropped.
    const lostVariant = await folder('lost-variant', {
      'onnx/vision_encoder_fp16.onnx': l.files.visionEncoder, 'onnx/embed_tokens.onnx': l.files.embedTokens,
      'onnx/decoder_model_merged.onnx': l.files.decoder, 'config.json': l.files.config,
    });
    const noDecoder = await folder('no-decoder', { 'onnx/vision_encoder.onnx': l.files.visionEncoder, 'onnx/embed_tokens.onnx': l.files.embedTokens });
    for (const dir of [empty, two, extra, lostVariant, noDecoder]) {
      const err = await partition({ input: dir, out: out() }).catch((e) => e);
      expect(err.code).toBe('E_PARTITION_LAYOUT');
      expect(err.detail.notes.filter((x: string) => x.startsWith('layout: '))).toEqual(KNOWN_LAYOUTS.map((k) => `layout: ${k}`));
      expect(await code(inspectModel(dir))).toBe('E_PARTITION_LAYOUT');
    }
    // With --dtype fp16 the vision encoder is used and the fp32 embed / decoder fill in.
    const { manifest: m } = await partition({ input: lostVariant, out: out(), dtype: 'fp16' });
    expect(m.bricks.map((b) => b.file)).toEqual(['vision_encoder_fp16.onnx', 'embed_tokens.onnx', 'decoder_model_merged.onnx']);
  });

  it('other variants beside the files used are named in a notice, by partition and inspect alike', async () => {
    const l = await fixtureDir('llava');
    const mono = await fixtureDir('llava-monolithic');
    const split = await folder('split-variants', {
      'onnx/vision_encoder.onnx': l.files.visionEncoder, 'onnx/embed_tokens.onnx': l.files.embedTokens,
      'onnx/decoder_model_merged.onnx': l.files.decoder, 'onnx/decoder_model_merged_q4.onnx': l.files.decoder,
      'onnx/decoder_with_past_model.onnx': l.files.decoder, 'config.json': l.files.config,
    });
    const monoVariants = await folder('mono-variants', { 'model.onnx': mono.file, 'model_fp16.onnx': mono.file });
    for (const [dir, unused] of [[split, ['decoder_model_merged_q4.onnx', 'decoder_with_past_model.onnx']], [monoVariants, ['model_fp16.onnx']]] as const) {
      const { notes } = await partition({ input: dir, out: out() });
      const r = await inspectModel(dir);
      for (const f of unused) {
        expect(notes.some((x) => x.startsWith('not used: ') && x.includes(f))).toBe(true);
        expect(r.notes.some((x) => x.startsWith('not used: ') && x.includes(f))).toBe(true);
      }
    }
    const { manifest: m, notes } = await partition({ input: monoVariants, out: out(), dtype: 'fp16' });
    expect(m.sources.map((s) => basename(s.path))).toEqual(['model_fp16.onnx']);
    expect(notes.some((x) => x.includes('model.onnx'))).toBe(true);
  });
});

describe('a decoder without a KV cache is flagged', () => {
  const notice = noKvCacheNotice([{ name: 'decoder', kind: 'decoder', inputs: [{ name: 'inputs_embeds' }] }])!;
  it('by partition, inspect and the runtime (run / chat print RuntimeModel.notices)', async () => {
    expect(notice).toBeDefined();
    const noKv = join(SHAPES, 'monolithic');
    const dir = out();
    const { notes } = await partition({ input: noKv, out: dir });
    expect(notes).toContain(notice);
    expect((await inspectModel(noKv)).notes).toContain(notice);
    const model = await openModel(dir);
    try { expect(model.notices).toContain(notice); } finally { await model.close(); }

    const withKv = out();
    const split = await partition({ input: SHAPES, out: withKv });
    expect(split.notes).not.toContain(notice);
    expect((await inspectModel(SHAPES)).notes).not.toContain(notice);
    const m2 = await openModel(withKv);
    try { expect(m2.notices).not.toContain(notice); } finally { await m2.close(); }
  });
});
