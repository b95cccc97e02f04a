/**
 * `quantize` (the default recipe, and npu-int8) → `compile --target rk3588` → the runtime, on the two
 * encoder-decoder families: Whisper (audio encoder + merged decoder with cross-attention and
 * use_cache_branch If subgraphs) calibrated on WAVs, Florence-2 (vision + embed + BART encoder + merged
 * decoder, prepend merge) calibrated on PNGs; both through the model's own processor.
 *
 * Oracles for "the quantized bundle runs right": (1) transformers.js 4.3.1 on the bundle's own files
 * (its brick files keep their hub names), for the accuracy_level-0 bundles of both families and Whisper's
 * default bundle; (2) a plain onnxruntime-node loop written here (refGreedy),
 * which shares no code with the runtime's generateSeq2Seq: no KV cache at all — every step re-runs the
 * decoder over the whole decoder sequence with empty past tensors and use_cache_branch = false — and the
 * generation_config rules (suppress / begin_suppress, forced bos / eos, no_repeat_ngram_size) applied
 * here as transformers.js defines them. Its inputs (input_features, pixel_values, the task prompt's ids)
 * are the runtime processor's, which test/run/whisper.test.ts and test/families/florence2.test.ts check
 * against transformers.js. Exact tokens at accuracy_level 0; at the default level 4 (int8 activations,
 * whose kernels differ between the runtime's one-row cached steps and the reference's full passes) each
 * runtime token must be within a tie of the reference's best. The quantizer's own figures are only
 * sanity-checked. Refusals are checked by code.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoProcessor, Florence2ForConditionalGeneration, RawImage, type Tensor } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { readBricksManifest, type BrickEntry } from '../../src/formats/bricks.js';
import { writePatternPng } from '../../src/fixtures/images.js';
import { buildTinyFlorence2 } from '../../src/fixtures/florence2.js';
import { buildTinyWhisper } from '../../src/fixtures/whisper-asr.js';
import { floatToHalf } from '../../src/onnx/dtype.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { RECIPES } from '../../src/quantize/recipes.js';
import type { TensorLike } from '../../src/run/backend.js';
import { toFloat32 } from '../../src/run/feeds.js';
import { encodeWavPcm16 } from '../../src/run/inputs/wav.js';
import { openModel } from '../../src/run/model.js';
import { runPrompt } from '../../src/run/run.js';
import { code } from '../error-codes.js';
import { transformersJsRoot } from '../families/helpers.js';

const NEW_TOKENS = 4;
/**
 * Logit gap allowed between the runtime's token and the reference's best under int8-compute kernels, in
 * standard deviations of that step's logits (a wrong token sits one to three deviations below the best;
 * measured: up to 0.049 on Florence-2's default bundle, 0 on Whisper's).
 */
const TIE = 0.1;
const tjs = transformersJsRoot('nanomind-quant-seq2seq-tjs-');
/** The PCM of each WAV written here (int16 / 32768), for transformers.js' feature extractor. */
const pcm = new Map<string, Float32Array>();
let root: string;
beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'nanomind-quant-seq2seq-')); });
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

/** Four 0.5 s two-tone clips: three calibrate, the last is held out. */
async function wavFolder(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [k, [f1, f2]] of ([[440, 1234], [180, 3100], [300, 700], [900, 2200]] as const).entries()) {
    const samples = Int16Array.from({ length: 8000 }, (_, i) =>
      Math.round(12000 * Math.sin((2 * Math.PI * f1 * i) / 16000) + 4000 * Math.sin((2 * Math.PI * f2 * i) / 16000)));
    await writeFile(join(dir, `clip-${k}.wav`), encodeWavPcm16(samples, 16000));
    pcm.set(join(dir, `clip-${k}.wav`), Float32Array.from(samples, (v) => v / 32768));
  }
  return dir;
}

/** Four 32×32 pattern PNGs (the processor's size): three calibrate, the last is held out. */
async function pngFolder(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (let k = 0; k < 4; k++) await writePatternPng(join(dir, `img-${k}.png`), 32, 32, k);
  return dir;
}

type Json = Record<string, unknown>;

/** A float32 array as the tensor a brick input declares (an fp16 brick may take float16). */
function declared(b: BrickEntry, name: string, data: Float32Array, dims: number[]): ort.Tensor {
  return b.inputs.find((i) => i.name === name)?.dtype === 'float16'
    ? new ort.Tensor('float16', Uint16Array.from(data, floatToHalf), dims)
    : new ort.Tensor('float32', data, dims);
}
const f32 = (t: ort.Tensor, name: string): Float32Array => toFloat32(t as unknown as TensorLike, name);

/**
 * The reference: encoder once, then per step the decoder over the whole sequence, no cache; greedy with
 * the generation_config rules. `encoderIn`: the encoder brick's feeds (Whisper) or, with `vision`, the
 * pixel values and prompt ids that become them (Florence-2: image rows in front of the prompt embeddings).
 */
async function refGreedy(bundle: string, o: { features?: Float32Array; featureDims?: number[]; pixels?: Float32Array; pixelDims?: number[]; promptIds?: readonly number[] },
  follow?: readonly number[]): Promise<{ tokens: number[]; gaps: number[] }> {
  const m = await readBricksManifest(bundle);
  const g = { ...JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as Json, ...JSON.parse(await readFile(join(bundle, 'generation_config.json'), 'utf8')) as Json };
  const by = (k: string) => m.bricks.find((b) => b.kind === k);
  const sessions = new Map<string, ort.InferenceSession>();
  const run = async (b: BrickEntry, feeds: Record<string, ort.Tensor>) => {
    if (!sessions.has(b.name)) sessions.set(b.name, await ort.InferenceSession.create(join(bundle, b.file)));
    return sessions.get(b.name)!.run(feeds);
  };
  try {
    const enc = (by('audio') ?? by('encoder'))!, dec = by('decoder')!, vision = by('vision'), embed = by('embed');
    const embedIds = async (ids: readonly number[]) =>
      f32((await run(embed!, { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) })).inputs_embeds!, 'inputs_embeds');
    let states: ort.Tensor;
    if (vision) {
      const feat = f32(Object.values(await run(vision, { [vision.inputs[0]!.name]: declared(vision, vision.inputs[0]!.name, o.pixels!, o.pixelDims!) }))[0]!, 'image_features');
      const prompt = await embedIds(o.promptIds!);
      const rows = (feat.length + prompt.length) / (prompt.length / o.promptIds!.length);
      const x = new Float32Array(feat.length + prompt.length); x.set(feat); x.set(prompt, feat.length);
      const hidden = x.length / rows;
      states = (await run(enc, {
        inputs_embeds: declared(enc, 'inputs_embeds', x, [1, rows, hidden]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(rows).fill(1n), [1, rows]),
      })).last_hidden_state!;
    } else {
      states = Object.values(await run(enc, { [enc.inputs[0]!.name]: declared(enc, enc.inputs[0]!.name, o.features!, o.featureDims!) }))[0]!;
    }
    const start = g.decoder_start_token_id as number;
    const ints = (v: unknown): number[] => (Array.isArray(v) ? v as number[] : typeof v === 'number' ? [v] : []);
    const prefix = g.is_multilingual
      ? [start, (g.lang_to_id as Json)['<|en|>'] as number, (g.task_to_id as Json).transcribe as number, g.no_timestamps_token_id as number]
      : [start];
    const ids = [...prefix], out: number[] = [], gaps: number[] = [];
    const eos = ints(g.eos_token_id), ngram = (g.no_repeat_ngram_size as number | undefined) ?? 0;
    for (let step = 0; step < NEW_TOKENS; step++) {
      const feeds: Record<string, ort.Tensor> = {
        encoder_hidden_states: states, use_cache_branch: new ort.Tensor('bool', Uint8Array.of(0), [1]),
      };
      if (dec.inputs.some((i) => i.name === 'inputs_embeds')) feeds.inputs_embeds = declared(dec, 'inputs_embeds', await embedIds(ids), [1, ids.length, states.dims[2]!]);
      else feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
      if (dec.inputs.some((i) => i.name === 'encoder_attention_mask')) feeds.encoder_attention_mask = new ort.Tensor('int64', new BigInt64Array(states.dims[1]!).fill(1n), [1, states.dims[1]!]);
      for (const i of dec.inputs.filter((x) => x.name.startsWith('past_key_values.'))) {
        const [, h, , d] = i.shape as number[];
        feeds[i.name] = i.dtype === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), [1, h!, 0, d!]) : new ort.Tensor('float32', new Float32Array(0), [1, h!, 0, d!]);
      }
      const lg = (await run(dec, feeds)).logits!;
      const V = lg.dims.at(-1)!;
      const row = f32(lg, 'logits').slice(-V);
      // transformers.js' processors, in its order (see the header)
      if (ngram > 0 && ids.length + 1 >= ngram) {
        const tail = ids.slice(ids.length + 1 - ngram).join(',');
        for (let j = 0; j + ngram <= ids.length; j++) if (ids.slice(j, j + ngram - 1).join(',') === tail) row[ids[j + ngram - 1]!] = -Infinity;
      }
      const only = (t: number[]) => { for (let v = 0; v < V; v++) if (!t.includes(v)) row[v] = -Infinity; };
      if (g.forced_bos_token_id !== undefined && ids.length === 1) only([g.forced_bos_token_id as number]);
      if (g.forced_eos_token_id !== undefined && ids.length === prefix.length + NEW_TOKENS - 1) only(ints(g.forced_eos_token_id));
      for (const t of ints(g.suppress_tokens)) row[t] = -Infinity;
      if (step === 0) for (const t of ints(g.begin_suppress_tokens)) row[t] = -Infinity;
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
      // teacher-forced: the given token, and how far its logit is below the reference's best
      const pick = follow ? follow[step] : best;
      if (pick === undefined) break;
      // in units of the step's logit spread (standard deviation over the tokens not ruled out)
      const fin = [...row].filter(Number.isFinite), mu = fin.reduce((x, y) => x + y, 0) / fin.length;
      const sd = Math.sqrt(fin.reduce((x, y) => x + (y - mu) ** 2, 0) / fin.length);
      const gap = row[best]! - row[pick]!;
      gaps.push(gap === 0 ? 0 : gap / sd);
      if (eos.includes(pick)) break;
      out.push(pick);
      ids.push(pick);
    }
    return { tokens: out, gaps };
  } finally {
    for (const s of sessions.values()) await s.release();
  }
}

/**
 * The runtime (`nanomind run`) on the bundle against the no-cache reference on the same bundle files.
 * `exact`: the same greedy tokens. Otherwise (MatMulNBits accuracy_level 4 quantizes activations to int8
 * in kernels that differ between one row, the runtime's cached step, and many, the reference's full
 * pass): with the reference fed the runtime's tokens, each of them, eos included, is within `TIE` of the
 * reference's best logit at its step. Returns the runtime's tokens, then its eos when it stopped on one.
 */
async function expectRuns(bundle: string, file: string, kind: 'audio' | 'image', exact: boolean): Promise<number[]> {
  const m = await openModel(bundle);
  try {
    const turn = kind === 'image' ? { images: [{ file }], prompt: '<CAPTION>' } : { audio: [{ file }] };
    const r = await runPrompt(m, turn, { maxNewTokens: NEW_TOKENS, sampling: { temperature: 0 } });
    const input = await m.mediaInput(kind, { file }) as TensorLike;
    const data = toFloat32(input, 'media');
    const inputs = kind === 'image'
      ? { pixels: data, pixelDims: [...input.dims], promptIds: (r as { promptIds?: readonly number[] }).promptIds }
      : { features: data, featureDims: [...input.dims] };
    expect(r.tokens.length).toBeGreaterThan(0);
    const eos = m.set.seq2seq!.decoding.eosTokenIds[0]!;
    const withEos = [...r.tokens, ...(r.stopReason === 'eos' ? [eos] : [])];
    if (exact) {
      expect([...r.tokens]).toEqual((await refGreedy(bundle, inputs)).tokens);
      return withEos;
    }
    const forced = await refGreedy(bundle, inputs, withEos);
    expect(forced.tokens).toEqual([...r.tokens]);
    expect(Math.max(...forced.gaps)).toBeLessThan(TIE);
    return withEos;
  } finally {
    await m.close();
  }
}

/**
 * transformers.js on the bundle's own files: the bricks keep their hub names (encoder_model.onnx,
 * decoder_model_merged.onnx, …), so onnx/<brick file> plus the bundle's config, tokenizer and processor
 * files is a folder it loads. Its greedy tokens (eos included when it stopped), after the prefix.
 */
async function transformersJs(bundle: string, tag: string, file: string, kind: 'audio' | 'image'): Promise<number[]> {
  const dir = join(tjs.dir(), tag);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  const m = await readBricksManifest(bundle);
  for (const b of m.bricks) for (const f of [b.file, ...b.dataFiles]) await copyFile(join(bundle, f), join(dir, 'onnx', f));
  for (const f of m.files) await copyFile(join(bundle, f.path), join(dir, f.path));
  type Gen = { generate: (o: Record<string, unknown>) => Promise<Tensor>; dispose: () => Promise<void> };
  if (kind === 'audio') {
    const fe = await AutoFeatureExtractor.from_pretrained(tag);
    const model = await AutoModelForSpeechSeq2Seq.from_pretrained(tag, { dtype: 'fp32' }) as unknown as Gen;
    try {
      const { input_features } = await fe(pcm.get(file)!) as { input_features: Tensor };
      const out = await model.generate({ inputs: input_features, max_new_tokens: NEW_TOKENS, language: 'en', task: 'transcribe' });
      return Array.from(out.data as BigInt64Array, Number).slice(4); // after <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>
    } finally { await model.dispose(); }
  }
  const processor = await AutoProcessor.from_pretrained(tag, {});
  const model = await Florence2ForConditionalGeneration.from_pretrained(tag, { dtype: 'fp32' }) as unknown as Gen;
  try {
    const inputs = await processor(await RawImage.read(file), '<CAPTION>') as Record<string, unknown>;
    const out = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS });
    return Array.from(out.data as BigInt64Array, Number).slice(1); // after the decoder start token
  } finally { await model.dispose(); }
}

interface Family { readonly name: string; readonly build: (dir: string) => Promise<unknown>; readonly kind: 'audio' | 'image'; readonly media: (dir: string) => Promise<string>; readonly encoder: string }
const FAMILIES: readonly Family[] = [
  { name: 'whisper', build: (d) => buildTinyWhisper(d), kind: 'audio', media: wavFolder, encoder: 'audio' },
  { name: 'florence2', build: (d) => buildTinyFlorence2(d), kind: 'image', media: pngFolder, encoder: 'vision' },
];

describe.each(FAMILIES.map((f) => [f.name, f] as const))('%s (encoder-decoder)', (name, f) => {
  it('default recipe and npu-int8 quantize on real inputs, compile for rk3588, and the bundles run', async () => {
    const src = join(root, name);
    await f.build(src);
    const bricks = join(root, `${name}-bricks`);
    await partition({ input: src, out: bricks });
    const kinds = (await readBricksManifest(bricks)).bricks.map((b) => b.kind);
    const calib = await f.media(join(root, `${name}-calib`));
    const held = join(calib, (await readdir(calib)).sort().at(-1)!);

    // the default recipe, npu-int8, and the default recipe with exact-float MatMulNBits (accuracy_level 0)
    const runs = [{ recipe: 'hybrid', level: 4 }, { recipe: 'npu-int8', level: 4 }, { recipe: 'hybrid', level: 0 }] as const;
    for (const { recipe, level } of runs) {
      const tag = `${name}-${recipe}-${level}`;
      const q = await quantizeBricks({ dir: bricks, out: join(root, tag), recipe, calib, heldOut: 1, newTokens: NEW_TOKENS, accuracyLevel: level,
        ...(level === 0 ? { algorithm: 'rtn' as const, compareAlgorithms: false } : {}) }); // the exact-kernel run only feeds the token oracles
      expect(q.report.bricks.map((b) => b.format)).toEqual(kinds.map((k) => RECIPES[recipe][k]));
      // a sample per brick run: 3 files calibrate, 1 is held out; every brick measured against its float
      // brick on the held-out file's real inputs, the encoders once, the decoder at every step (first and cached)
      expect(q.report.calibration.source).toBe('dir');
      expect(q.report.calibration.samples).toBeGreaterThan(3 * 2);
      for (const b of q.report.bricks) if (b.kind !== 'decoder' && b.kind !== 'embed') expect(b.heldOut?.samples, b.name).toBe(1);
      expect(q.report.bricks.find((b) => b.kind === 'decoder')!.heldOut!.samples).toBeGreaterThan(1);
      const dec = q.report.bricks.find((b) => b.kind === 'decoder')!;
      expect(dec.rewritten.MatMulNBits).toBeGreaterThan(0);
      expect(dec.notes.some((n) => /If subgraph/.test(n))).toBe(true);
      expect(dec.cosine!).toBeGreaterThan(0.95);
      const enc = q.report.bricks.find((b) => b.kind === f.encoder)!;
      expect(enc.algorithm).toBe(recipe === 'hybrid' ? 'cast' : 'qdq-minmax');
      expect(enc.cosine!).toBeGreaterThan(recipe === 'hybrid' ? 0.999 : 0.95);
      const e2e = q.report.endToEnd!;
      expect(e2e).toMatchObject({ generator: 'runtime-seq2seq', prompts: 1, newTokens: NEW_TOKENS });
      expect(e2e.prefixAgreement).toBeLessThanOrEqual(e2e.tokenAgreement);

      const bundle = join(root, `${tag}-bundle`);
      await compile({ bricks: q.out, target: 'rk3588', out: bundle, rknn: 'skip' });
      expect((await readdir(bundle)).includes('calibration')).toBe(false); // nothing made up for rknn-toolkit2
      const got = await expectRuns(bundle, held, f.kind, level === 0);
      // Also transformers.js on the same files: exactly, where no int8-compute kernel choice is involved
      // (accuracy_level 0), and on Whisper's default bundle. Florence-2's default bundle has steps whose
      // top two logits are within 0.05 deviations (measured 0.049, and 0.0014 after a calibration change),
      // where the int8 kernel of a one-row cached step and of a full pass pick differently: the tie check covers it.
      if (level === 0 || f.kind === 'audio') expect(got).toEqual(await transformersJs(bundle, tag, held, f.kind));
    }

    // without inputs, only an unmeasured round-to-nearest set (nothing to calibrate, nothing to compare)
    const plain = await quantizeBricks({ dir: bricks, out: join(root, `${name}-rtn`), evaluate: false, algorithm: 'rtn' });
    expect(plain.report.bricks.find((b) => b.kind === 'decoder')!).toMatchObject({ algorithm: 'rtn', heldOut: null });
    expect(plain.report.endToEnd).toBeNull();
    // refusals, one code each: no real inputs; an eval set / sweep (decoder-only chains)
    expect(await code(quantizeBricks({ dir: bricks, out: join(root, `${name}-x`) }))).toBe('E_QUANT_CALIB');
    expect(await code(quantizeBricks({ dir: bricks, out: join(root, `${name}-x`), recipe: 'npu-int8', calib: 2 }))).toBe('E_QUANT_CALIB');
    expect(await code(quantizeBricks({ dir: bricks, out: join(root, `${name}-x`), calib, sweep: true }))).toBe('E_QUANT_INPUT');
  }, 120_000);
});
