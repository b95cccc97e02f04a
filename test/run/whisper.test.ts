/**
 * Whisper end to end: the tiny random-weight Whisper fixture (onnx-community layout, fp32 / fp16 / q8
 * files) partitioned into an audio brick + a decoder brick, then transcribed by the runtime.
 *
 * Oracle: transformers.js 4.3.1 (WhisperFeatureExtractor + WhisperForConditionalGeneration.generate on
 * the same ONNX files, loaded with dtype 'fp32' / 'fp16' / 'q8', and its WhisperTokenizer), fed the same
 * PCM samples the WAV holds (int16 / 32768, computed here, not read back by the runtime's WAV reader).
 * Other checks: a compiled bundle against the brick set it came from; seeded sampling against itself
 * (same seed, same tokens) and the suppress list; error paths by code.
 * Measured on this machine: input_features max abs difference 1.2e-7 (one float32 step near 1: both
 * compute in float64 and round to float32); tokens identical for every variant and clip.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoTokenizer, env, type Tensor } from '@huggingface/transformers';
import { writeDtypeVariants } from '../../src/fixtures/variants.js';
import { buildTinyWhisper, WHISPER_TOKENS, type TinyWhisperFiles, type WhisperVariant } from '../../src/fixtures/whisper-asr.js';
import { compile } from '../../src/compile/index.js';
import { partition } from '../../src/partition/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { audioFeatures, loadFeatureExtractorConfig } from '../../src/run/inputs/audio.js';
import { encodeWavPcm16 } from '../../src/run/inputs/wav.js';
import { whisperPrefix } from '../../src/run/generation/seq2seq.js';
import { openModel } from '../../src/run/model.js';
import { runPrompt } from '../../src/run/run.js';
import { code } from '../error-codes.js';
import { cli } from '../cli-helper.js';

/** transformers.js dtype → partition --dtype suffix. fp16 and q8 come with the fixture; the hub's other
 *  variants are written by the shared variant writer (src/fixtures/variants.ts) in beforeAll. */
const VARIANTS: Record<string, string | undefined> = {
  fp32: undefined, fp16: 'fp16', q8: 'quantized', q4: 'q4', q4f16: 'q4f16', int8: 'int8', uint8: 'uint8', bnb4: 'bnb4',
};
const PREFIX = [WHISPER_TOKENS['<|startoftranscript|>'], WHISPER_TOKENS['<|en|>'], WHISPER_TOKENS['<|transcribe|>'], WHISPER_TOKENS['<|notimestamps|>']];
const EOT = WHISPER_TOKENS['<|endoftext|>'];
const MAX_NEW = 40;

let root: string;
let fx: TinyWhisperFiles;
const clips: { file: string; samples: Float32Array }[] = [];

/** 0.75 s of two tones (a clip shorter than the 1 s chunk, so padding is exercised too). */
function clip(f1: number, f2: number): { pcm: Int16Array; samples: Float32Array } {
  const pcm = Int16Array.from({ length: 12000 }, (_, i) =>
    Math.round(12000 * Math.sin((2 * Math.PI * f1 * i) / 16000) + 4000 * Math.sin((2 * Math.PI * f2 * i) / 16000)));
  return { pcm, samples: Float32Array.from(pcm, (v) => v / 32768) };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-whisper-'));
  fx = await buildTinyWhisper(join(root, 'tiny-whisper'));
  await writeDtypeVariants(join(fx.dir, 'onnx'), ['encoder_model', 'decoder_model_merged'], ['q4', 'q4f16', 'int8', 'uint8', 'bnb4'], { fp16Io: 'float32' });
  for (const [i, [a, b]] of [[440, 1234], [180, 3100]].entries()) {
    const c = clip(a!, b!);
    const file = join(root, `clip${i}.wav`);
    await writeFile(file, encodeWavPcm16(c.pcm, 16000));
    clips.push({ file, samples: c.samples });
  }
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(fx.dir) + '/';
});

afterAll(async () => {
  for (const m of models.values()) await (await m).dispose();
  await rm(root, { recursive: true, force: true });
});

async function referenceFeatures(samples: Float32Array): Promise<Tensor> {
  const fe = await AutoFeatureExtractor.from_pretrained(basename(fx.dir));
  return ((await fe(samples)) as { input_features: Tensor }).input_features;
}

const models = new Map<string, Promise<Awaited<ReturnType<typeof AutoModelForSpeechSeq2Seq.from_pretrained>>>>();
const references = new Map<string, Promise<{ ids: number[]; text: string }>>();

/** transformers.js generate + decode (each model loaded once, each answer computed once). */
function reference(dtype: string, samples: Float32Array, o: { language?: string; task?: string } = {}): Promise<{ ids: number[]; text: string }> {
  const key = `${dtype}/${clips.findIndex((c) => c.samples === samples)}/${o.language}/${o.task}`;
  let r = references.get(key);
  if (!r) {
    r = (async () => {
      const name = basename(fx.dir);
      let model = models.get(dtype);
      if (!model) models.set(dtype, model = AutoModelForSpeechSeq2Seq.from_pretrained(name, { dtype: dtype as 'fp32' }));
      const inputs = await referenceFeatures(samples);
      const out = await (await model).generate({ inputs, max_new_tokens: MAX_NEW, language: o.language ?? 'en', task: o.task ?? 'transcribe' } as never) as Tensor;
      const ids = Array.from(out.data as BigInt64Array, Number);
      const tok = await AutoTokenizer.from_pretrained(name);
      return { ids, text: tok.decode(ids, { skip_special_tokens: true }) };
    })();
    references.set(key, r);
  }
  return r;
}

describe('Whisper fixture', () => {
  it('is small, and every variant is in the onnx-community file layout', async () => {
    const { stat } = await import('node:fs/promises');
    let bytes = 0;
    for (const v of Object.values(fx.files)) for (const f of [v.encoder, v.decoder]) bytes += (await stat(f)).size;
    expect(bytes).toBeLessThan(5 << 20);
    expect(Object.values(fx.files).map((f) => basename(f.decoder))).toEqual(
      ['decoder_model_merged.onnx', 'decoder_model_merged_fp16.onnx', 'decoder_model_merged_quantized.onnx']);
  });
});

describe('input_features vs transformers.js WhisperFeatureExtractor', () => {
  it('matches within 1e-5 on the fixture config (16 mels, 1 s chunk)', async () => {
    const cfg = await loadFeatureExtractorConfig(fx.dir);
    for (const c of clips) {
      const ours = await audioFeatures(c.file, cfg);
      const ref = await referenceFeatures(c.samples);
      expect(ours.dims).toEqual(ref.dims);
      let max = 0;
      const r = ref.data as Float32Array;
      for (let i = 0; i < r.length; i++) max = Math.max(max, Math.abs(ours.data[i]! - r[i]!));
      expect(max).toBeLessThanOrEqual(1e-5);
    }
  });
});

describe.each(Object.keys(VARIANTS))('run --audio, %s files', (variant) => {
  let bricks: string;
  beforeAll(async () => {
    bricks = join(root, `bricks-${variant}`);
    await partition({ input: fx.dir, out: bricks, dtype: VARIANTS[variant] });
  });

  it('gives transformers.js greedy tokens and text for each clip', async () => {
    const m = await openModel(bricks);
    try {
      const seen: string[] = [];
      for (const c of clips) {
        const ref = await reference(variant, c.samples);
        expect(ref.ids.slice(0, PREFIX.length)).toEqual(PREFIX);
        expect(ref.ids.at(-1)).toBe(EOT); // stopped on eos, before MAX_NEW
        const expected = ref.ids.slice(PREFIX.length, -1);
        expect(expected.length).toBeGreaterThanOrEqual(5);
        expect(new Set(expected).size).toBeGreaterThan(2);
        const r = await runPrompt(m, { audio: [{ file: c.file }] }, { maxNewTokens: MAX_NEW });
        expect(r.tokens).toEqual(expected);
        expect(r.stopReason).toBe('eos');
        expect(r.text).toBe(ref.text.trim());
        expect(r.stats.promptTokens).toBe(PREFIX.length);
        seen.push(r.tokens.join(','));
      }
      // The audio matters: the two clips are transcribed differently.
      expect(new Set(seen).size).toBe(clips.length);
    } finally {
      await m.close();
    }
  });
});

describe('fp16 files with float16 at the edges (cache, encoder output)', () => {
  it('give the same tokens as transformers.js on the float32-edged fp16 files', async () => {
    // Same weights and float16 arithmetic; only the edge dtypes differ, and fp16 → fp32 → fp16 is exact.
    // The runtime must then keep a float16 cache and convert the float16 encoder output for the decoder.
    const dir = join(root, 'half-io');
    await buildTinyWhisper(dir, {}, { fp16HalfIo: (n) => n === 'last_hidden_state' || /^(past_key_values|present)\./.test(n) });
    const bricks = join(root, 'bricks-half-io');
    await partition({ input: dir, out: bricks, dtype: 'fp16' });
    const m = await openModel(bricks);
    try {
      const dec = m.set.seq2seq!.decoder;
      expect(dec.inputs.find((i) => i.name === 'past_key_values.0.decoder.key')!.dtype).toBe('float16');
      expect(m.set.seq2seq!.encoder.outputs[0]!.dtype).toBe('float16');
      expect(dec.inputs.find((i) => i.name === 'encoder_hidden_states')!.dtype).toBe('float32');
      const ref = await reference('fp16', clips[0]!.samples);
      const r = await runPrompt(m, { audio: [{ file: clips[0]!.file }] }, { maxNewTokens: MAX_NEW });
      expect(r.tokens).toEqual(ref.ids.slice(PREFIX.length, -1));
    } finally {
      await m.close();
    }
  });
});

describe('run on a Whisper brick set: limits and errors', () => {
  let bricks: string;
  beforeAll(async () => {
    bricks = join(root, 'bricks-limits');
    await partition({ input: fx.dir, out: bricks });
  });

  it('stops at --max-tokens, and --input-ids replaces the forced prefix', async () => {
    const m = await openModel(bricks);
    try {
      const full = await runPrompt(m, { audio: [{ file: clips[0]!.file }] }, {});
      const cut = await runPrompt(m, { audio: [{ file: clips[0]!.file }] }, { maxNewTokens: 3 });
      expect(cut.tokens).toEqual(full.tokens.slice(0, 3));
      expect(cut.stopReason).toBe('max-tokens');
      // The default prefix given explicitly changes nothing; a shorter one (no <|notimestamps|>) is honoured.
      const same = await runPrompt(m, { audio: [{ file: clips[0]!.file }], inputIds: PREFIX }, {});
      expect(same.tokens).toEqual(full.tokens);
      const other = await runPrompt(m, { audio: [{ file: clips[0]!.file }], inputIds: PREFIX.slice(0, 3) }, { maxNewTokens: MAX_NEW });
      expect(other.stats.promptTokens).toBe(3);
    } finally {
      await m.close();
    }
  });

  it('--language / --task pick the prefix as transformers.js does', async () => {
    const m = await openModel(bricks);
    try {
      const ref = await reference('fp32', clips[1]!.samples, { language: 'de', task: 'translate' });
      expect(ref.ids.slice(0, 3)).toEqual([WHISPER_TOKENS['<|startoftranscript|>'], WHISPER_TOKENS['<|de|>'], WHISPER_TOKENS['<|translate|>']]);
      const r = await runPrompt(m, { audio: [{ file: clips[1]!.file }] }, { maxNewTokens: MAX_NEW, language: 'de', task: 'translate' });
      expect(ref.ids.at(-1)).toBe(EOT);
      expect(r.tokens).toEqual(ref.ids.slice(PREFIX.length, -1));
      // The random fixture's greedy tokens barely depend on the prefix, so check the prefix itself too.
      expect(whisperPrefix(m.set.seq2seq!.decoding, { language: 'de', task: 'translate' })).toEqual(ref.ids.slice(0, PREFIX.length));
      expect(whisperPrefix(m.set.seq2seq!.decoding, { language: '<|de|>', task: 'translate' })).toEqual(ref.ids.slice(0, PREFIX.length));
      expect(await code(runPrompt(m, { audio: [{ file: clips[1]!.file }] }, { language: 'xx' }))).toBe('E_USAGE');
    } finally {
      await m.close();
    }
  });

  it('samples reproducibly with a seed, never picking a suppressed token', async () => {
    const m = await openModel(bricks);
    try {
      const run = () => runPrompt(m, { audio: [{ file: clips[0]!.file }] }, { maxNewTokens: 12, sampling: { temperature: 1.5, seed: 7 } });
      const [a, b] = [await run(), await run()];
      expect(a.tokens).toEqual(b.tokens);
      const suppressed = new Set(m.set.seq2seq!.decoding.suppressTokens);
      expect(a.tokens.filter((t) => suppressed.has(t))).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('compiles into a bundle that transcribes the same; quantize without real calibration inputs refuses with one code (test/quantize/seq2seq.test.ts quantizes it)', async () => {
    const out = join(root, 'bundle');
    await compile({ bricks, target: 'rk3588', out, rknn: 'skip' });
    const [set, bundle] = [await openModel(bricks), await openModel(out)];
    try {
      expect(bundle.bundle).toBeDefined();
      const a = await runPrompt(set, { audio: [{ file: clips[1]!.file }] }, { maxNewTokens: MAX_NEW });
      const b = await runPrompt(bundle, { audio: [{ file: clips[1]!.file }] }, { maxNewTokens: MAX_NEW });
      expect(b.tokens).toEqual(a.tokens);
    } finally {
      await set.close();
      await bundle.close();
    }
    expect(await code(quantizeBricks({ dir: bricks, out: join(root, 'q') }))).toBe('E_QUANT_CALIB');
  });

  it('refuses a decoder without the merged cache interface', async () => {
    const dir = join(root, 'bricks-unmerged');
    await partition({ input: fx.dir, out: dir });
    const file = join(dir, 'bricks.json');
    const j = JSON.parse(await readFile(file, 'utf8'));
    j.bricks[1].inputs = j.bricks[1].inputs.filter((i: { name: string }) => i.name !== 'use_cache_branch');
    await writeFile(file, JSON.stringify(j));
    expect(await code(openModel(dir))).toBe('E_BRICKS_ROLE');
  });

  it('refuses what a speech-to-text model cannot take, each with one code', async () => {
    const m = await openModel(bricks);
    try {
      const a = { file: clips[0]!.file };
      expect(await code(runPrompt(m, { audio: [a, a] }))).toBe('E_USAGE');
      expect(await code(runPrompt(m, { audio: [] }))).toBe('E_USAGE');
      expect(await code(runPrompt(m, { audio: [a], prompt: 'hello' }))).toBe('E_USAGE');
      expect(await code(runPrompt(m, { audio: [a], images: [{ file: a.file }] }))).toBe('E_USAGE');
    } finally {
      await m.close();
    }
  });
});

describe('CLI: partition then run --audio', () => {
  it('prints the transcript; --json gives the same tokens as the library', async () => {
    const out = join(root, 'cli-bricks');
    const p = await cli('partition', fx.dir, '-o', out, '--dtype', 'fp16');
    expect(p.code, p.stderr).toBe(0);
    const ref = await reference('fp16', clips[1]!.samples);
    const r = await cli('run', out, '--audio', clips[1]!.file, '--json', '--max-tokens', String(MAX_NEW));
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { text: string; tokens: number[]; stopReason: string; stats: { newTokens: number } };
    expect(j.tokens).toEqual(ref.ids.slice(PREFIX.length, -1));
    expect(j.text).toBe(ref.text.trim());
    const plain = await cli('run', out, '--audio', clips[1]!.file);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout.trim()).toBe(ref.text.trim());
    const chat = await cli('chat', out, '--json');
    expect(chat.code).toBe(2); // a usage error: Whisper transcribes, it does not chat
    expect(JSON.parse(chat.stdout || chat.stderr).error.code).toBe('E_USAGE');
  });
});
