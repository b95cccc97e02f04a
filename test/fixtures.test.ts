import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import { loadModel, tensorElementCount } from '../src/onnx/model-io.js';
import { DT } from '../src/onnx/dtype.js';
import {
  AUDIO_TOKEN_ID, CHAT_TEMPLATE, cleanupFixtures, IMAGE_TOKEN_ID, SPECIAL_TOKENS, buildTinyLlava, expectedParams, fixtureDir,
  mergeFeaturesTs, positionIdsFromMask, tinyAudioConfig, tinyLlavaConfig, type TextConfig,
} from './fixtures/index.js';

// ---------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------

const sessions = new Map<string, Promise<ort.InferenceSession>>();
const session = (file: string): Promise<ort.InferenceSession> => {
  let s = sessions.get(file);
  if (!s) { s = ort.InferenceSession.create(file); sessions.set(file, s); }
  return s;
};
afterAll(async () => {
  for (const s of sessions.values()) await (await s).release();
  await cleanupFixtures();
});

const f32 = (data: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', data, dims);
const i64 = (data: ArrayLike<number | bigint>, dims: readonly number[]) =>
  new ort.Tensor('int64', BigInt64Array.from(Array.from(data, (v) => BigInt(v))), dims);

/** x[i] = sin(0.1 i), the torch fixtures' feature formula. */
const detFloat = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(0.1 * i));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const allFinite = (a: ArrayLike<number>): boolean => Array.prototype.every.call(a, Number.isFinite) as boolean;
const data = (t: ort.Tensor): Float32Array => t.data as Float32Array;

/** Token ids: ChatML-ish prefix, `count` feature tokens, then text; `pad` leading pad tokens with mask 0. */
function prompt(featureToken: number, count: number, pad = 0): { ids: number[]; mask: number[] } {
  const text = (n: number, off: number) => Array.from({ length: n }, (_, p) => (7 * (p + off) + 3) % 300);
  const ids = [...Array(pad).fill(SPECIAL_TOKENS['<|endoftext|>']), SPECIAL_TOKENS['<|im_start|>'], ...text(3, 0),
    ...Array(count).fill(featureToken), ...text(5, 9), SPECIAL_TOKENS['<|im_end|>']];
  return { ids, mask: ids.map((_, p) => (p < pad ? 0 : 1)) };
}

function emptyPast(t: TextConfig): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let i = 0; i < t.layers; i++)
    for (const kv of ['key', 'value'])
      feeds[`past_key_values.${i}.${kv}`] = f32(new Float32Array(0), [1, t.kvHeads, 0, t.headDim]);
  return feeds;
}

const presentsAsPast = (t: TextConfig, out: ort.InferenceSession.OnnxValueMapType): Record<string, ort.Tensor> =>
  Object.fromEntries(Array.from({ length: t.layers }, (_, i) => ['key', 'value'].map((kv) =>
    [`past_key_values.${i}.${kv}`, out[`present.${i}.${kv}`] as ort.Tensor])).flat());

async function embed(file: string, ids: readonly number[]): Promise<Float32Array> {
  const out = await (await session(file)).run({ input_ids: i64(ids, [1, ids.length]) });
  return data(out.inputs_embeds as ort.Tensor);
}

async function decode(file: string, t: TextConfig, embeds: Float32Array, mask: readonly number[],
  past: Record<string, ort.Tensor> = emptyPast(t)): Promise<ort.InferenceSession.OnnxValueMapType> {
  const S = embeds.length / t.hidden;
  const pos = positionIdsFromMask(mask).slice(mask.length - S);
  return (await session(file)).run({
    inputs_embeds: f32(embeds, [1, S, t.hidden]), attention_mask: i64(mask, [1, mask.length]),
    position_ids: i64(pos, [1, S]), ...past,
  });
}

/** Split chain: encoder → TS merge into token embeddings → decoder with empty past. */
async function splitLogits(files: { encoder: string; embedTokens: string; decoder: string }, feedName: string,
  featureOut: string, feature: ort.Tensor, t: TextConfig, tokenId: number, ids: number[], mask: number[]): Promise<Float32Array> {
  const feats = data((await (await session(files.encoder)).run({ [feedName]: feature }))[featureOut] as ort.Tensor);
  const embeds = mergeFeaturesTs(ids, await embed(files.embedTokens, ids), feats, tokenId, t.hidden);
  return data((await decode(files.decoder, t, embeds, mask)).logits as ort.Tensor);
}

async function monoLogits(file: string, feedName: string, feature: ort.Tensor, ids: number[], mask: number[]): Promise<Float32Array> {
  const out = await (await session(file)).run({ [feedName]: feature, input_ids: i64(ids, [1, ids.length]), attention_mask: i64(mask, [1, mask.length]) });
  const logits = out.logits as ort.Tensor;
  expect(logits.dims).toEqual([1, ids.length, 320]);
  return data(logits);
}

/** Elements of learned parameters: initializers not named `onnx::*`; also checks that helper float constants are scalars. */
async function paramCount(file: string): Promise<number> {
  const { model } = await loadModel(file);
  let n = 0;
  for (const t of model.graph!.initializer) {
    if (t.name.startsWith('onnx::')) {
      if (t.dataType === DT.FLOAT) expect(t.dims, `${t.name} should be a scalar helper`).toEqual([]);
      continue;
    }
    expect(t.dataType).toBe(DT.FLOAT);
    n += tensorElementCount(t);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------------

describe('tiny LLaVA fixture (onnx-community layout)', () => {
  it('writes the layout with the declared I/O, and every file runs in ORT', async () => {
    const fx = await fixtureDir('llava');
    const { text: t } = fx.config;
    for (const f of Object.values(fx.files)) expect((await stat(f)).size).toBeGreaterThan(0);
    expect(basename(fx.files.visionEncoder)).toBe('vision_encoder.onnx');
    expect(fx.files.decoder).toBe(join(fx.dir, 'onnx', 'decoder_model_merged.onnx'));

    const vis = await session(fx.files.visionEncoder);
    expect(vis.inputMetadata).toEqual([{ name: 'pixel_values', isTensor: true, type: 'float32', shape: ['batch_size', 3, 32, 32] }]);
    expect(vis.outputMetadata).toEqual([{ name: 'image_features', isTensor: true, type: 'float32', shape: ['batch_size', 16, 64] }]);
    const img = (await vis.run({ pixel_values: f32(detFloat(2 * 3 * 32 * 32), [2, 3, 32, 32]) })).image_features as ort.Tensor;
    expect(img.dims).toEqual([2, 16, 64]);
    expect(allFinite(data(img))).toBe(true);

    const emb = await session(fx.files.embedTokens);
    expect(emb.inputNames).toEqual(['input_ids']);
    expect(emb.outputMetadata).toEqual([{ name: 'inputs_embeds', isTensor: true, type: 'float32', shape: ['batch_size', 'sequence_length', 64] }]);
    const e = await embed(fx.files.embedTokens, [0, 5, 319, 314]);
    expect(e.length).toBe(4 * 64);

    const dec = await session(fx.files.decoder);
    expect(dec.inputNames).toEqual(['inputs_embeds', 'attention_mask', 'position_ids',
      'past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value']);
    expect(dec.outputNames).toEqual(['logits', 'present.0.key', 'present.0.value', 'present.1.key', 'present.1.value']);
    expect(dec.inputMetadata[3]).toMatchObject({ shape: ['batch_size', 2, 'past_sequence_length', 16] });
    expect(dec.outputMetadata[1]).toMatchObject({ shape: ['batch_size', 2, 'total_sequence_length', 16] });
    const out = await decode(fx.files.decoder, t, e, [1, 1, 1, 1]);
    expect((out.logits as ort.Tensor).dims).toEqual([1, 4, 320]);
    expect((out['present.1.value'] as ort.Tensor).dims).toEqual([1, 2, 4, 16]);
    for (const v of Object.values(out)) expect(allFinite(data(v as ort.Tensor))).toBe(true);
    // random weights, but not degenerate: logits vary across the vocabulary
    const row = data(out.logits as ort.Tensor).subarray(0, 320);
    expect(Math.max(...row) - Math.min(...row)).toBeGreaterThan(0.5);

    const cfg = JSON.parse(await readFile(fx.files.config, 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'llava_onevision', image_token_index: 319,
      text_config: { hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 320, max_position_embeddings: 512 },
      vision_config: { hidden_size: 32, image_size: 32, patch_size: 8, num_hidden_layers: 2 } });
    const pre = JSON.parse(await readFile(fx.files.preprocessorConfig, 'utf8'));
    expect(pre).toMatchObject({ do_resize: true, size: { height: 32, width: 32 }, resample: 3, do_rescale: true,
      rescale_factor: 1 / 255, do_normalize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], do_convert_rgb: true });
    expect(JSON.parse(await readFile(fx.files.generationConfig, 'utf8')).eos_token_id).toBe(316);
  });

  it('monolithic graph runs and equals the split chain (vision → TS merge → decoder)', async () => {
    const fx = await fixtureDir('llava');
    const mono = await fixtureDir('llava-monolithic');
    const t = fx.config.text;
    const pix = f32(detFloat(3 * 32 * 32), [1, 3, 32, 32]);
    const files = { encoder: fx.files.visionEncoder, embedTokens: fx.files.embedTokens, decoder: fx.files.decoder };
    for (const pad of [0, 3]) {
      const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16, pad);
      const split = await splitLogits(files, 'pixel_values', 'image_features', pix, t, IMAGE_TOKEN_ID, ids, mask);
      const whole = await monoLogits(mono.file, 'pixel_values', pix, ids, mask);
      expect(allFinite(whole)).toBe(true);
      expect(maxAbsDiff(split, whole)).toBeLessThanOrEqual(1e-5);
    }
    // the image really feeds the logits (the merge is not a no-op)
    const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16);
    const other = f32(detFloat(3 * 32 * 32).map((v) => -v), [1, 3, 32, 32]);
    const a = await monoLogits(mono.file, 'pixel_values', pix, ids, mask);
    const b = await monoLogits(mono.file, 'pixel_values', other, ids, mask);
    expect(maxAbsDiff(a.subarray(0, 4 * 320), b.subarray(0, 4 * 320))).toBe(0); // before the image tokens
    expect(maxAbsDiff(a.subarray(-320), b.subarray(-320))).toBeGreaterThan(1e-2);
  });

  it('split files keep their module scopes', async () => {
    const fx = await fixtureDir('llava');
    const scopes = async (file: string) => (await loadModel(file)).model.graph!.node.map((n) => n.name.split('/')[1]);
    expect(new Set(await scopes(fx.files.visionEncoder))).toEqual(new Set(['vision_tower', 'multi_modal_projector']));
    expect(new Set(await scopes(fx.files.embedTokens))).toEqual(new Set(['language_model']));
    expect(new Set(await scopes(fx.files.decoder))).toEqual(new Set(['language_model']));
  });

  it('monolithic graph keeps the module scopes and the top-level merge', async () => {
    const { model } = await loadModel((await fixtureDir('llava-monolithic')).file);
    const names = model.graph!.node.map((n) => n.name);
    for (const s of ['/vision_tower/vision_model/encoder/layers.1/self_attn/', '/multi_modal_projector/linear_2/',
      '/language_model/embed_tokens/Gather', '/language_model/layers.1/mlp/down_proj/MatMul', '/language_model/lm_head/MatMul'])
      expect(names.some((n) => n.startsWith(s)), s).toBe(true);
    const top = model.graph!.node.filter((n) => n.name.split('/').length === 2).map((n) => n.opType);
    expect(top).toEqual(expect.arrayContaining(['Equal', 'Cast', 'CumSum', 'Clip', 'Gather', 'Where', 'Unsqueeze']));
    const inits = new Set(model.graph!.initializer.map((i) => i.name));
    for (const n of ['vision_tower.vision_model.embeddings.patch_embedding.weight', 'multi_modal_projector.linear_1.bias',
      'language_model.embed_tokens.weight', 'language_model.layers.0.self_attn.q_proj.weight', 'language_model.lm_head.weight'])
      expect(inits.has(n), n).toBe(true);
  });
});

describe('tiny audio LLM fixture', () => {
  it('audio encoder runs with the declared I/O', async () => {
    const fx = await fixtureDir('audio');
    const enc = await session(fx.files.audioEncoder);
    expect(enc.inputMetadata).toEqual([{ name: 'input_features', isTensor: true, type: 'float32', shape: ['batch_size', 16, 64] }]);
    expect(enc.outputMetadata).toEqual([{ name: 'audio_features', isTensor: true, type: 'float32', shape: ['batch_size', 32, 64] }]);
    const out = (await enc.run({ input_features: f32(detFloat(2 * 16 * 64), [2, 16, 64]) })).audio_features as ort.Tensor;
    expect(out.dims).toEqual([2, 32, 64]);
    expect(allFinite(data(out))).toBe(true);
    expect(JSON.parse(await readFile(fx.files.config, 'utf8'))).toMatchObject({ model_type: 'qwen2_audio', audio_token_index: 318 });
    const { model } = await loadModel(fx.files.audioEncoder);
    expect(model.graph!.node.every((n) => /^\/(audio_tower|multi_modal_projector)\//.test(n.name))).toBe(true);
  });

  it('monolithic graph equals the split chain (audio → TS merge → decoder)', async () => {
    const fx = await fixtureDir('audio');
    const mono = await fixtureDir('audio-monolithic');
    const feats = f32(detFloat(16 * 64), [1, 16, 64]);
    const files = { encoder: fx.files.audioEncoder, embedTokens: fx.files.embedTokens, decoder: fx.files.decoder };
    for (const pad of [0, 2]) {
      const { ids, mask } = prompt(AUDIO_TOKEN_ID, 32, pad);
      const split = await splitLogits(files, 'input_features', 'audio_features', feats, fx.config.text, AUDIO_TOKEN_ID, ids, mask);
      const whole = await monoLogits(mono.file, 'input_features', feats, ids, mask);
      expect(allFinite(whole)).toBe(true);
      expect(maxAbsDiff(split, whole)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('shares embed/decoder weights with the LLaVA fixture (same seed)', async () => {
    const a = await readFile((await fixtureDir('audio')).files.decoder);
    const b = await readFile((await fixtureDir('llava')).files.decoder);
    expect(a.equals(b)).toBe(true);
  });
});

describe('decoder KV cache and padding', () => {
  it('10 tokens in one pass = 6 tokens then 4 with past', async () => {
    const fx = await fixtureDir('llava');
    const t = fx.config.text;
    const ids = [315, 17, 99, 250, 3, 4, 128, 200, 316, 42];
    for (const pad of [0, 2]) {
      const mask = ids.map((_, p) => (p < pad ? 0 : 1));
      const e = await embed(fx.files.embedTokens, ids);
      const full = await decode(fx.files.decoder, t, e, mask);
      const first = await decode(fx.files.decoder, t, e.slice(0, 6 * t.hidden), mask.slice(0, 6));
      const second = await decode(fx.files.decoder, t, e.slice(6 * t.hidden), mask, presentsAsPast(t, first));
      const fl = data(full.logits as ort.Tensor);
      expect((second.logits as ort.Tensor).dims).toEqual([1, 4, 320]);
      // Rows of padding queries see no key at all; their (finite, unused) values depend on the key
      // count, so compare real positions only.
      expect(maxAbsDiff(data(first.logits as ort.Tensor).subarray(pad * 320), fl.subarray(pad * 320, 6 * 320))).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(data(second.logits as ort.Tensor), fl.subarray(6 * 320))).toBeLessThanOrEqual(1e-4);
      const realRows = (x: ort.Tensor): number[] => Array.from(data(x)).filter((_, k) => Math.floor(k / 16) % 10 >= pad);
      for (let i = 0; i < t.layers; i++)
        for (const kv of ['key', 'value']) {
          const p = second[`present.${i}.${kv}`] as ort.Tensor;
          expect(p.dims).toEqual([1, 2, 10, 16]);
          expect(maxAbsDiff(realRows(p), realRows(full[`present.${i}.${kv}`] as ort.Tensor))).toBeLessThanOrEqual(1e-4);
        }
    }
  });

  it('left padding: no NaN, and real tokens get the same logits as without padding', async () => {
    const fx = await fixtureDir('llava');
    const t = fx.config.text;
    const ids = [315, 17, 99, 250, 3, 4, 128];
    const pad = 4;
    const padded = [...Array(pad).fill(314), ...ids];
    const mask = padded.map((_, p) => (p < pad ? 0 : 1));
    const out = data((await decode(fx.files.decoder, t, await embed(fx.files.embedTokens, padded), mask)).logits as ort.Tensor);
    expect(allFinite(out)).toBe(true);
    const ref = data((await decode(fx.files.decoder, t, await embed(fx.files.embedTokens, ids), ids.map(() => 1))).logits as ort.Tensor);
    expect(maxAbsDiff(out.subarray(pad * 320), ref)).toBeLessThanOrEqual(1e-4);
  });
});

describe('fixture bookkeeping', () => {
  it('parameter counts match expectedParams()', async () => {
    const llava = await fixtureDir('llava');
    const p = expectedParams(llava.config);
    expect(p).toMatchObject({ visionTower: 23840, projector: 6272, embedTokens: 20480, decoder: 94784, total: 145376 });
    expect(await paramCount(llava.files.visionEncoder)).toBe(p.files['vision_encoder.onnx']);
    expect(await paramCount(llava.files.embedTokens)).toBe(p.files['embed_tokens.onnx']);
    expect(await paramCount(llava.files.decoder)).toBe(p.files['decoder_model_merged.onnx']);
    expect(await paramCount((await fixtureDir('llava-monolithic')).file)).toBe(p.files['model.onnx']);

    const audio = await fixtureDir('audio');
    const q = expectedParams(audio.config);
    expect(q).toMatchObject({ audioTower: 22784, projector: 2112, embedTokens: 20480, decoder: 94784, total: 140160 });
    expect(await paramCount(audio.files.audioEncoder)).toBe(q.files['audio_encoder.onnx']);
    expect(await paramCount((await fixtureDir('audio-monolithic')).file)).toBe(q.files['model.onnx']);
    expect(expectedParams(tinyAudioConfig()).total).toBe(q.total);
    expect(expectedParams().total).toBe(p.total);
  });

  it('is deterministic, honours externalThreshold and other sizes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nanomind-fx-test-'));
    try {
      const ref = await fixtureDir('llava');
      const ext = await buildTinyLlava(join(dir, 'ext'), { externalThreshold: 1024 });
      expect(ext.dataFiles.map((f) => basename(f)).sort())
        .toEqual(['decoder_model_merged.onnx_data', 'embed_tokens.onnx_data', 'vision_encoder.onnx_data']);
      expect(JSON.parse(await readFile(ext.files.config, 'utf8'))['transformers.js_config']).toEqual({ use_external_data_format: true });
      const pix = f32(detFloat(3 * 32 * 32), [1, 3, 32, 32]);
      const a = (await (await session(ref.files.visionEncoder)).run({ pixel_values: pix })).image_features as ort.Tensor;
      const b = (await (await session(ext.files.visionEncoder)).run({ pixel_values: pix })).image_features as ort.Tensor;
      expect(maxAbsDiff(data(a), data(b))).toBe(0);

      const again = await buildTinyLlava(join(dir, 'again'));
      for (const k of ['visionEncoder', 'embedTokens', 'decoder', 'tokenizer'] as const)
        expect((await readFile(again.files[k])).equals(await readFile(ref.files[k])), k).toBe(true);

      const big = await buildTinyLlava(join(dir, 'big'), { hidden: 128, seed: 7 });
      expect(big.config.text).toMatchObject({ hidden: 128, headDim: 32, intermediate: 256 });
      expect(await paramCount(big.files.decoder)).toBe(expectedParams(tinyLlavaConfig({ hidden: 128 })).decoder);
      const e = await embed(big.files.embedTokens, [1, 2, 3]);
      const out = await decode(big.files.decoder, big.config.text, e, [1, 1, 1]);
      expect((out['present.0.key'] as ort.Tensor).dims).toEqual([1, 2, 3, 32]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('tokenizer.json is a consistent byte-level BPE with ids < 320', async () => {
    const fx = await fixtureDir('llava');
    const tok = JSON.parse(await readFile(fx.files.tokenizer, 'utf8'));
    expect(tok.pre_tokenizer.type).toBe('ByteLevel');
    expect(tok.decoder.type).toBe('ByteLevel');
    const vocab = tok.model.vocab as Record<string, number>;
    const ids = [...Object.values(vocab), ...tok.added_tokens.map((a: { id: number }) => a.id)].sort((x, y) => x - y);
    expect(ids).toEqual(Array.from({ length: 320 }, (_, i) => i));
    for (const m of tok.model.merges as string[]) {
      const [l, r] = m.split(' ');
      expect(vocab[l] < vocab[l + r] && vocab[r] < vocab[l + r], m).toBe(true);
    }
    expect(Object.fromEntries(tok.added_tokens.map((a: { content: string; id: number }) => [a.content, a.id])))
      .toEqual({ '<|endoftext|>': 314, '<|im_start|>': 315, '<|im_end|>': 316, '<video>': 317, '<audio>': 318, '<image>': 319 });
    const tc = JSON.parse(await readFile(fx.files.tokenizerConfig, 'utf8'));
    expect(tc.chat_template).toBe(CHAT_TEMPLATE);
    expect(tc.eos_token).toBe('<|im_end|>');
  });
});
