/**
 * Audio inputs: the FFT against a direct DFT; Whisper log-mel features against transformers.js'
 * WhisperFeatureExtractor (fixture config: 16 mels × 64 frames; standard Whisper: 80 × 3000); the WAV
 * reader on hand-built files of every supported encoding and on broken ones; the resampler's passband
 * accuracy and stopband attenuation; a real espeak-ng recording when the binary is installed.
 *
 * Tolerance vs transformers.js: ≤ 1e-5 asserted (FEATURE_TOL); measured max abs diff 1.2e-7 on tones
 * and on espeak-ng speech, i.e. float32 rounding (we compute in float64, transformers.js keeps |X|² and
 * the mel product in float32).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { AutoFeatureExtractor, WhisperFeatureExtractor, env } from '@huggingface/transformers';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import {
  WHISPER_DEFAULTS, audioFeatures, loadFeatureExtractorConfig, logMelSpectrogram, readWav, resample, type LogMel,
  type WhisperFeatureConfig,
} from '../../src/run/inputs/audio.js';
import { Fft } from '../../src/run/inputs/fft.js';
import { NanomindError } from '../../src/errors.js';

const FEATURE_TOL = 1e-5;

/** Sum of sines: [frequency Hz, amplitude] at `rate`, `seconds` long. */
function tones(parts: [number, number][], seconds: number, rate = 16000): Float32Array {
  return Float32Array.from({ length: Math.round(seconds * rate) }, (_, i) =>
    parts.reduce((s, [f, a]) => s + a * Math.sin((2 * Math.PI * f * i) / rate), 0));
}

async function refFeatures(fe: { _call?: unknown } & ((x: Float32Array) => Promise<{ input_features: { data: Float32Array; dims: number[] } }>), x: Float32Array) {
  const { input_features } = await fe(x);
  return input_features;
}

function maxAbs(a: LogMel, ref: { data: Float32Array; dims: number[] }): number {
  expect([...a.dims]).toEqual(ref.dims);
  let m = 0;
  for (let i = 0; i < ref.data.length; i++) m = Math.max(m, Math.abs(a.data[i] - ref.data[i]));
  return m;
}

let fixtureCfg: WhisperFeatureConfig;
let fixtureRef: (x: Float32Array) => Promise<{ input_features: { data: Float32Array; dims: number[] } }>;
let scratch: string;

beforeAll(async () => {
  const dir = (await fixtureDir('audio')).dir;
  fixtureCfg = await loadFeatureExtractorConfig(dir);
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(dir) + '/';
  fixtureRef = (await AutoFeatureExtractor.from_pretrained(basename(dir))) as never;
  scratch = await mkdtemp(join(tmpdir(), 'nanomind-audio-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
  await cleanupFixtures();
});

describe('Fft', () => {
  it('equals a direct DFT for power-of-two, mixed-radix and prime lengths', () => {
    for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 30, 49, 97, 100, 128, 400, 1000]) {
      const re = Float64Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) + (i % 3) * 0.25);
      const im = Float64Array.from({ length: n }, (_, i) => Math.cos(i * 0.3) - 0.5);
      for (const withIm of [false, true]) {
        const oRe = new Float64Array(n), oIm = new Float64Array(n);
        new Fft(n).transform(re, withIm ? im : null, oRe, oIm);
        let err = 0, scale = 0;
        for (let k = 0; k < n; k++) {
          let sr = 0, si = 0;
          for (let j = 0; j < n; j++) {
            const a = (-2 * Math.PI * ((j * k) % n)) / n;
            const xi = withIm ? im[j] : 0;
            sr += re[j] * Math.cos(a) - xi * Math.sin(a);
            si += re[j] * Math.sin(a) + xi * Math.cos(a);
          }
          err = Math.max(err, Math.hypot(oRe[k] - sr, oIm[k] - si));
          scale = Math.max(scale, Math.hypot(sr, si));
        }
        expect(err / Math.max(1, scale), `n=${n}`).toBeLessThan(1e-12);
      }
    }
  });
});

describe('logMelSpectrogram vs transformers.js WhisperFeatureExtractor', () => {
  it(`matches on the fixture config (16 mels, 64 frames) within ${FEATURE_TOL}, padded and truncated`, async () => {
    expect(fixtureCfg).toMatchObject({ feature_size: 16, nb_max_frames: 64, n_samples: 10240 });
    const measured: string[] = [];
    for (const [name, x] of Object.entries({
      short: tones([[440, 0.3], [1234, 0.2], [3000, 0.1]], 0.4), // 6400 samples: zero-padded
      long: tones([[220, 0.5], [2500, 0.05], [7000, 0.02]], 1.0), // 16000 samples: truncated
      silence: new Float32Array(3000),
    })) {
      const ours = logMelSpectrogram(x, fixtureCfg);
      const d = maxAbs(ours, await refFeatures(fixtureRef as never, x));
      measured.push(`${name} ${d.toExponential(1)}`);
      expect(d, name).toBeLessThanOrEqual(FEATURE_TOL);
    }
    console.log(`fixture config, max abs diff vs transformers.js: ${measured.join(', ')}`);
  });

  it(`matches on the standard Whisper config (80 mels, 3000 frames) within ${FEATURE_TOL}`, async () => {
    const ref = new WhisperFeatureExtractor({ ...WHISPER_DEFAULTS } as never) as never;
    const x = tones([[300, 0.4], [1000, 0.2], [4100, 0.05]], 2.5);
    const ours = logMelSpectrogram(x, WHISPER_DEFAULTS);
    const d = maxAbs(ours, await refFeatures(ref, x));
    console.log(`whisper config, max abs diff vs transformers.js: ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(FEATURE_TOL);
    expect(ours.dims).toEqual([1, 80, 3000]);
    expect(ours.validFrames).toBe(250);
    // a 300 Hz tone lands in a low mel bin, far above the clamp floor; padding sits at the floor
    const frames = 3000, at = (m: number, t: number) => ours.data[m * frames + t];
    const floor = ours.data.reduce((a, b) => Math.min(a, b), Infinity);
    expect(at(4, 100)).toBeGreaterThan(floor + 1);
    expect(at(4, 2900)).toBe(floor);
  });

  it('uses mel_filters from the config when present (either orientation)', async () => {
    const ref = new WhisperFeatureExtractor({ ...fixtureCfg } as never) as unknown as { config: { mel_filters: number[][] } };
    const melMajor = ref.config.mel_filters; // transformers.js computed [16][201]
    expect(melMajor).toHaveLength(16);
    const x = tones([[500, 0.3], [2000, 0.3]], 0.5);
    const base = logMelSpectrogram(x, fixtureCfg);
    const transposed = melMajor[0].map((_, j) => melMajor.map((r) => r[j]));
    for (const mel_filters of [melMajor, transposed]) {
      const d = maxAbs(logMelSpectrogram(x, { ...fixtureCfg, mel_filters }), { data: base.data, dims: [...base.dims] });
      expect(d).toBeLessThan(1e-5); // transformers.js' filters are float64 too; only summation order differs
    }
    expect(() => logMelSpectrogram(x, { ...fixtureCfg, mel_filters: [[1, 2]] })).toThrow(NanomindError);
  });

  it('counts valid frames like the attention mask, and rejects a bad config as E_PREPROCESSOR', () => {
    expect(logMelSpectrogram(new Float32Array(1), fixtureCfg).validFrames).toBe(1);
    expect(logMelSpectrogram(new Float32Array(1601), fixtureCfg).validFrames).toBe(11);
    expect(logMelSpectrogram(new Float32Array(99999), fixtureCfg).validFrames).toBe(64);
    try {
      logMelSpectrogram(new Float32Array(10), { ...fixtureCfg, hop_length: 0, n_fft: 2.5 });
      expect.unreachable();
    } catch (e) {
      expect((e as NanomindError).code).toBe('E_PREPROCESSOR');
      expect((e as NanomindError).detail.notes).toHaveLength(2);
    }
  });
});

/** A WAV file assembled field by field. */
function wav(opts: {
  format?: number; channels?: number; rate?: number; bits?: number; frames: number[][]; extensible?: boolean;
  extraChunk?: boolean; dataSize?: number; align?: number; riff?: string;
}): Uint8Array {
  const { channels = 1, rate = 16000, bits = 16, format = 1 } = opts;
  const width = bits / 8;
  const body: number[] = [];
  const push = (n: number, bytes: number) => { for (let i = 0; i < bytes; i++) body.push((n >>> (8 * i)) & 0xff); };
  const str = (s: string) => { for (const c of s) body.push(c.charCodeAt(0)); };
  str(opts.riff ?? 'RIFF'); push(0, 4); str('WAVE');
  if (opts.extraChunk) { str('LIST'); push(3, 4); str('abc'); body.push(0); } // odd size: pad byte
  str('fmt '); push(opts.extensible ? 40 : 16, 4);
  push(opts.extensible ? 0xfffe : format, 2); push(channels, 2); push(rate, 4); push(rate * width * channels, 4);
  push(opts.align ?? width * channels, 2); push(bits, 2);
  if (opts.extensible) { push(22, 2); push(bits, 2); push(0, 4); push(format, 2); for (let i = 0; i < 14; i++) body.push(0); }
  const samples: number[] = [];
  const dv = new DataView(new ArrayBuffer(8));
  for (const frame of opts.frames) for (const v of frame) {
    if (format === 3 && bits === 32) { dv.setFloat32(0, v, true); samples.push(...new Uint8Array(dv.buffer, 0, 4)); }
    else if (format === 3) { dv.setFloat64(0, v, true); samples.push(...new Uint8Array(dv.buffer, 0, 8)); }
    else if (bits === 8) samples.push(Math.round(v * 128 + 128));
    else { const q = Math.round(v * 2 ** (bits - 1)); for (let i = 0; i < width; i++) samples.push((q >> (8 * i)) & 0xff); }
  }
  str('data'); push(opts.dataSize ?? samples.length, 4); body.push(...samples);
  const out = Uint8Array.from(body);
  new DataView(out.buffer).setUint32(4, out.length - 8, true);
  return out;
}

describe('readWav', () => {
  const mono = [[0], [0.5], [-0.5], [0.25], [-1]];
  it('reads 8/16/24/32-bit PCM and 32/64-bit float, plain and WAVE_FORMAT_EXTENSIBLE', () => {
    for (const [format, bits] of [[1, 8], [1, 16], [1, 24], [1, 32], [3, 32], [3, 64]]) {
      for (const extensible of [false, true]) {
        const w = readWav(wav({ format, bits, frames: mono, extensible, rate: 22050 }));
        expect(w).toMatchObject({ sampleRate: 22050, channels: 1, bitsPerSample: bits, encoding: format === 3 ? 'float' : 'pcm' });
        expect([...w.samples]).toEqual(mono.map(([v]) => v));
      }
    }
  });

  it('averages channels, skips unknown chunks and clamps a streamed (oversized) data length', () => {
    const stereo = readWav(wav({ channels: 2, frames: [[0.5, -0.5], [0.25, 0.75], [1 - 2 ** -15, 1 - 2 ** -15]], extraChunk: true }));
    expect([...stereo.samples]).toEqual([0, 0.5, 1 - 2 ** -15]);
    expect(stereo.channels).toBe(2);
    const streamed = readWav(wav({ frames: mono, dataSize: 0x7ffff000 }));
    expect(streamed.samples).toHaveLength(5);
    const rf64 = readWav(wav({ frames: mono, dataSize: 0xffffffff, riff: 'RF64' }));
    expect(rf64.samples).toHaveLength(5);
    const partial = wav({ bits: 16, frames: mono });
    expect(readWav(partial.subarray(0, partial.length - 1)).samples).toHaveLength(4); // a cut-off last frame is dropped
  });

  it('reports E_AUDIO for non-WAV and broken files', () => {
    const good = wav({ frames: mono });
    const noData = good.subarray(0, 36);
    const cases: Record<string, Uint8Array> = {
      empty: new Uint8Array(0),
      text: new TextEncoder().encode('this is not a wav file at all'),
      riffNotWave: Uint8Array.from([...good.subarray(0, 8), ...new TextEncoder().encode('AVI '), ...good.subarray(12)]),
      noData,
      noFmt: Uint8Array.from([...good.subarray(0, 12), ...good.subarray(36)]),
      alaw: wav({ format: 6, bits: 8, frames: mono }),
      bits12: wav({ bits: 16, frames: mono, align: 4 }),
      float16: wav({ format: 3, bits: 32, frames: mono }).map((b, i) => (i === 34 ? 16 : b)),
      noChannels: wav({ channels: 0, frames: [] }),
      shortFmt: Uint8Array.from([...good.subarray(0, 16), 4, 0, 0, 0, 1, 0, 1, 0]),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      let code = 'no error';
      try {
        readWav(bytes, name);
      } catch (e) {
        code = (e as NanomindError).code;
      }
      expect(code, name).toBe('E_AUDIO');
    }
  });
});

describe('resample', () => {
  const rms = (x: Float32Array, from: number, to: number) => Math.sqrt(x.subarray(from, to).reduce((s, v) => s + v * v, 0) / (to - from));

  it('keeps in-band tones (error < 1e-5) and removes what would alias (≤ −100 dB)', () => {
    // Measured: passband flat to 6.5 kHz (error ≤ 4e-6 for a unit tone), −1.7 % at 7 kHz, transition band
    // ~7–8.3 kHz around the 7.56 kHz cutoff (0.945 × 8 kHz), stopband −104 dB at 8.5 kHz, ≤ −124 dB beyond 9 kHz.
    const parts: [number, number][] = [[440, 0.5], [1500, 0.25], [3000, 0.2]];
    for (const from of [44100, 48000, 22050, 8000, 11025]) {
      const x = tones(parts, 0.5, from);
      const y = resample(x, from, 16000);
      expect(y.length).toBe(Math.ceil((x.length * 16000) / from));
      const want = tones(parts, 0.5, 16000);
      let err = 0;
      for (let i = 400; i < y.length - 400; i++) err = Math.max(err, Math.abs(y[i] - want[i])); // away from the zero-padded ends
      expect(err, `${from} Hz`).toBeLessThan(1e-5);
    }
    for (const [from, f] of [[44100, 8500], [44100, 10000], [48000, 12000], [22050, 9000]]) {
      const y = resample(tones([[f, 1]], 0.5, from), from, 16000);
      const db = 20 * Math.log10(rms(y, 400, y.length - 400) / Math.SQRT1_2);
      expect(db, `${f} Hz from ${from} Hz`).toBeLessThan(-100);
    }
    const same = tones([[440, 0.5]], 0.1);
    expect(resample(same, 16000, 16000)).toEqual(same);
    expect(() => resample(same, 0, 16000)).toThrow(NanomindError);
  });
});

describe('audioFeatures', () => {
  it('reads, resamples and featurises a WAV; E_AUDIO for a missing file', async () => {
    const x = tones([[440, 0.5]], 0.25, 8000);
    const f = await audioFeatures(wav({ bits: 16, rate: 8000, frames: [...x].map((v) => [v]) }), fixtureCfg);
    expect(f.dims).toEqual([1, 16, 64]);
    expect(f.seconds).toBe(0.25);
    expect(f.validFrames).toBe(25);
    const err = await audioFeatures(join(scratch, 'nope.wav'), fixtureCfg).catch((e: unknown) => e);
    expect((err as NanomindError).code).toBe('E_AUDIO');
  });

  const espeak = (() => {
    try {
      execFileSync('espeak-ng', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  it.skipIf(!espeak)('featurises real speech recorded by espeak-ng (22.05 kHz, file and streamed header)', async () => {
    const file = join(scratch, 'hello.wav');
    execFileSync('espeak-ng', ['-w', file, 'Hello world, this is a test of the audio input.']);
    const streamed = execFileSync('espeak-ng', ['--stdout', 'Hello world, this is a test of the audio input.']);
    const w = readWav(await readFile(file), file);
    expect(w).toMatchObject({ sampleRate: 22050, channels: 1, bitsPerSample: 16 });
    expect([...readWav(streamed).samples]).toEqual([...w.samples]);
    expect(w.samples.length / w.sampleRate).toBeGreaterThan(1);

    const samples = resample(w.samples, w.sampleRate, 16000);
    const ref = new WhisperFeatureExtractor({ ...WHISPER_DEFAULTS } as never) as never;
    const ours = await audioFeatures(file, WHISPER_DEFAULTS);
    const d = maxAbs(ours, await refFeatures(ref, samples));
    console.log(`espeak-ng speech (${ours.seconds.toFixed(2)} s), max abs diff vs transformers.js: ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(FEATURE_TOL);
    expect(ours.validFrames).toBe(Math.ceil(samples.length / 160));
    // speech: the voiced frames carry energy well above the padding floor
    const floor = ours.data.reduce((a, b) => Math.min(a, b), Infinity);
    const loud = Array.from({ length: ours.validFrames }, (_, t) => ours.data[10 * 3000 + t]).filter((v) => v > floor + 0.5);
    expect(loud.length).toBeGreaterThan(ours.validFrames / 4);
  });
});
