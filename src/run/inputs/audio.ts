/**
 * Audio → Whisper log-mel `input_features` [1, feature_size, nb_max_frames] for an audio encoder.
 *
 *   readWav            WAV bytes → mono float32 (./wav.ts)
 *   resample           any rate → the extractor's sampling_rate (16 kHz), band-limited
 *   logMelSpectrogram  Hugging Face's WhisperFeatureExtractor: pad with zeros / truncate to n_samples;
 *                      frames of n_fft (400) every hop_length (160) samples, centred (reflect-padded by
 *                      n_fft/2); periodic Hann window; |FFT|²; slaney-scale, slaney-normalised triangular
 *                      mel filters over 0..8000 Hz (or `mel_filters` from the config when present, as
 *                      transformers.js does); log10(max(mel, 1e-10)); the last frame dropped (so
 *                      n_samples / hop frames); clamp to (max − 8); (x + 4) / 4.
 * Computed in float64 and stored as float32. Config `dither` (random noise, off by default in
 * transformers) is not applied: the features are deterministic.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../../errors.js';
import { readJsonFile } from '../../formats/json-file.js';
import { Fft } from './fft.js';
import { readWav } from './wav.js';

export { readWav, type WavAudio } from './wav.js';

/** The preprocessor_config.json fields of a WhisperFeatureExtractor that this reads. */
export interface WhisperFeatureConfig {
  readonly feature_size: number;
  readonly sampling_rate: number;
  readonly hop_length: number;
  readonly n_fft: number;
  readonly n_samples: number;
  readonly nb_max_frames: number;
  /** [feature_size][n_fft/2 + 1], as older Whisper configs ship them (the transpose is accepted too). */
  readonly mel_filters?: readonly (readonly number[])[];
}

/** Whisper's own values (openai/whisper-*: 80 mel bins, 30 s at 16 kHz). */
export const WHISPER_DEFAULTS: WhisperFeatureConfig = {
  feature_size: 80, sampling_rate: 16000, hop_length: 160, n_fft: 400, n_samples: 480000, nb_max_frames: 3000,
};

export interface LogMel {
  /** Mel-major: data[m · frames + t]. */
  readonly data: Float32Array;
  readonly dims: readonly [1, number, number];
  /** Frames that cover real audio (the rest is padding): Hugging Face's attention_mask sum. */
  readonly validFrames: number;
}

// ---------------------------------------------------------------------------------------------------
// Resampling
// ---------------------------------------------------------------------------------------------------

/**
 * Band-limited resampling by a Kaiser-windowed sinc (the method of resampy / libsamplerate's sinc
 * converters): each output sample is Σ x[k]·h(t − k) over ±ZEROS zero crossings of the low-pass
 * kernel h, whose cutoff is ROLLOFF × the lower of the two Nyquist rates — so downsampling removes what
 * would alias instead of folding it into the speech band. h is tabulated TABLE points per zero
 * crossing and linearly interpolated; the signal is taken as zero beyond its ends. Measured into 16 kHz
 * (test/run/inputs-audio.test.ts): flat to 6.5 kHz (error ≤ 4e-6 on a unit tone), −1.7 % at 7 kHz,
 * transition ~7–8.3 kHz, stopband ≤ −104 dB from 8.5 kHz. Cost: 2·ZEROS/scale taps per output sample
 * (≈ 0.4 s for 30 s of 44.1 kHz audio on one core).
 */
const ZEROS = 32;
const ROLLOFF = 0.945;
const KAISER_BETA = 12;
const TABLE = 512;

let kernel: Float64Array | undefined;

function besselI0(x: number): number {
  let sum = 1, term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

function sincKernel(): Float64Array {
  if (kernel) return kernel;
  const n = ZEROS * TABLE + 2;
  kernel = new Float64Array(n);
  const norm = besselI0(KAISER_BETA);
  for (let i = 0; i < n; i++) {
    const t = i / TABLE; // in zero crossings of the unscaled sinc
    const r = Math.min(1, t / ZEROS);
    const window = besselI0(KAISER_BETA * Math.sqrt(1 - r * r)) / norm;
    const x = Math.PI * ROLLOFF * t;
    kernel[i] = ROLLOFF * (t === 0 ? 1 : Math.sin(x) / x) * window;
  }
  return kernel;
}

export function resample(samples: Float32Array, fromRate: number, toRate = 16000): Float32Array {
  if (!(fromRate > 0) || !(toRate > 0)) throw fail('E_AUDIO', `cannot resample from ${fromRate} Hz to ${toRate} Hz`);
  if (fromRate === toRate) return samples.slice();
  const h = sincKernel();
  const scale = Math.min(1, toRate / fromRate); // kernel stretch: cutoff at the lower Nyquist rate
  const reach = ZEROS / scale; // input samples on each side of the output instant
  const outLen = Math.ceil((samples.length * toRate) / fromRate);
  const out = new Float32Array(outLen);
  const step = fromRate / toRate;
  for (let t = 0; t < outLen; t++) {
    const c = t * step; // output instant in input samples
    const k0 = Math.max(0, Math.ceil(c - reach)), k1 = Math.min(samples.length - 1, Math.floor(c + reach));
    let acc = 0;
    for (let k = k0; k <= k1; k++) {
      const u = Math.abs(k - c) * scale * TABLE;
      const i = Math.floor(u);
      if (i >= ZEROS * TABLE) continue;
      acc += samples[k] * (h[i] + (u - i) * (h[i + 1] - h[i]));
    }
    out[t] = acc * scale;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Whisper log-mel
// ---------------------------------------------------------------------------------------------------

const hzToMel = (f: number) => (f >= 1000 ? 15 + Math.log(f / 1000) * (27 / Math.log(6.4)) : (3 * f) / 200);
const melToHz = (m: number) => (m >= 15 ? 1000 * Math.exp((Math.log(6.4) / 27) * (m - 15)) : (200 * m) / 3);

/** Sparse mel filter rows: row m covers bins first[m] .. first[m] + weights[m].length − 1. */
interface MelBank { first: Int32Array; weights: Float64Array[] }

/** numpy.linspace: start + i·step, the last point exactly `stop`. */
function linspace(start: number, stop: number, num: number): Float64Array {
  const step = (stop - start) / (num - 1);
  const out = Float64Array.from({ length: num }, (_, i) => start + i * step);
  out[num - 1] = stop;
  return out;
}

/** transformers' mel_filter_bank(n_fft/2+1, n_mels, 0, 8000, sr, norm='slaney', mel_scale='slaney'). */
function slaneyMelBank(nBins: number, nMels: number, rate: number): Float64Array[] {
  const edges = linspace(hzToMel(0), hzToMel(8000), nMels + 2).map(melToHz);
  const fftFreqs = linspace(0, Math.floor(rate / 2), nBins);
  return Array.from({ length: nMels }, (_, m) => {
    const row = new Float64Array(nBins);
    const enorm = 2 / (edges[m + 2] - edges[m]);
    for (let j = 0; j < nBins; j++) {
      const down = (fftFreqs[j] - edges[m]) / (edges[m + 1] - edges[m]);
      const up = (edges[m + 2] - fftFreqs[j]) / (edges[m + 2] - edges[m + 1]);
      row[j] = Math.max(0, Math.min(down, up)) * enorm;
    }
    return row;
  });
}

function sparse(rows: Float64Array[]): MelBank {
  const first = new Int32Array(rows.length);
  const weights = rows.map((r, m) => {
    let a = r.findIndex((v) => v !== 0), b = r.length - 1;
    if (a < 0) a = b = 0; // an empty filter (too many mels for n_fft) contributes nothing
    while (b > a && r[b] === 0) b--;
    first[m] = a;
    return r.slice(a, b + 1);
  });
  return { first, weights };
}

const banks = new Map<string, MelBank>();

function melBank(cfg: WhisperFeatureConfig, nBins: number): MelBank {
  const given = cfg.mel_filters;
  if (given) {
    // Hub configs store [n_mels][n_freqs] (transformers.js reads it so); accept the transpose too.
    const melMajor = given.length === cfg.feature_size && given[0]?.length === nBins;
    return sparse(Array.from({ length: cfg.feature_size }, (_, m) =>
      melMajor ? Float64Array.from(given[m]) : Float64Array.from(given, (r) => r[m])));
  }
  const key = `${nBins}/${cfg.feature_size}/${cfg.sampling_rate}`;
  let b = banks.get(key);
  if (!b) banks.set(key, (b = sparse(slaneyMelBank(nBins, cfg.feature_size, cfg.sampling_rate))));
  return b;
}

function checkConfig(cfg: WhisperFeatureConfig, where: string): void {
  const issues: string[] = [];
  for (const k of ['feature_size', 'sampling_rate', 'hop_length', 'n_fft', 'n_samples', 'nb_max_frames'] as const)
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) issues.push(`${k}: expected a positive integer, got ${JSON.stringify(cfg[k])}`);
  const nBins = Math.floor(cfg.n_fft / 2) + 1;
  const mf = cfg.mel_filters;
  const shapeOk = (rows: number, cols: number) => mf!.length === rows && mf!.every((r) => Array.isArray(r) && r.length === cols);
  if (mf && !(Array.isArray(mf) && (shapeOk(cfg.feature_size, nBins) || shapeOk(nBins, cfg.feature_size))))
    issues.push(`mel_filters: expected ${cfg.feature_size} rows of ${nBins} (or the transpose)`);
  if (cfg.n_samples < cfg.n_fft / 2 + 1) issues.push(`n_samples: ${cfg.n_samples} is too short for n_fft ${cfg.n_fft} reflect padding`);
  if (issues.length) throw fail('E_PREPROCESSOR', `${where}: ${issues.length} problem(s) in the feature extractor config`, { file: where, notes: issues });
}

/** Whisper features of mono samples already at `cfg.sampling_rate`. */
export function logMelSpectrogram(samples: Float32Array | Float64Array, cfg: WhisperFeatureConfig = WHISPER_DEFAULTS): LogMel {
  checkConfig(cfg, '<feature extractor config>');
  const { n_fft: nFft, hop_length: hop, n_samples: nSamples, feature_size: nMels } = cfg;
  const frames = Math.min(Math.floor(nSamples / hop), cfg.nb_max_frames);
  const nBins = Math.floor(nFft / 2) + 1;
  const half = Math.floor(nFft / 2);

  // Pad / truncate to n_samples, then reflect-pad by n_fft/2 (numpy 'reflect': the edge is not repeated).
  const len = nSamples + 2 * half;
  const x = new Float64Array(len);
  for (let i = 0; i < Math.min(samples.length, nSamples); i++) x[half + i] = samples[i];
  for (let i = 1; i <= half; i++) {
    x[half - i] = x[half + i];
    x[half + nSamples - 1 + i] = x[half + nSamples - 1 - i];
  }

  const window = Float64Array.from({ length: nFft }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / nFft)); // periodic Hann
  const fft = new Fft(nFft);
  const frame = new Float64Array(nFft), re = new Float64Array(nFft), im = new Float64Array(nFft);
  const power = new Float64Array(nBins);
  const bank = melBank(cfg, nBins);
  const mel = new Float64Array(nMels * frames);
  for (let t = 0; t < frames; t++) {
    const off = t * hop;
    for (let i = 0; i < nFft; i++) frame[i] = x[off + i] * window[i];
    fft.transform(frame, null, re, im);
    for (let j = 0; j < nBins; j++) power[j] = re[j] * re[j] + im[j] * im[j];
    for (let m = 0; m < nMels; m++) {
      const w = bank.weights[m], a = bank.first[m];
      let acc = 0;
      for (let j = 0; j < w.length; j++) acc += w[j] * power[a + j];
      mel[m * frames + t] = Math.log10(Math.max(acc, 1e-10));
    }
  }
  let max = -Infinity;
  for (const v of mel) max = Math.max(max, v);
  const data = new Float32Array(mel.length);
  for (let i = 0; i < mel.length; i++) data[i] = (Math.max(mel[i], max - 8) + 4) / 4;
  const validFrames = Math.min(frames, Math.ceil(Math.min(samples.length, nSamples) / hop));
  return { data, dims: [1, nMels, frames], validFrames };
}

// ---------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------

/** Reads a WhisperFeatureExtractor preprocessor_config.json (E_PREPROCESSOR when unusable). */
export async function loadFeatureExtractorConfig(dir: string): Promise<WhisperFeatureConfig> {
  const file = join(dir, 'preprocessor_config.json');
  const raw = await readJsonFile(file, 'E_PREPROCESSOR');
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw fail('E_PREPROCESSOR', `${file}: expected a JSON object`, { file });
  const cfg = raw as WhisperFeatureConfig;
  checkConfig(cfg, file);
  return cfg;
}

/** WAV file or bytes → resampled → Whisper features; also the duration of the audio in seconds. */
export async function audioFeatures(input: string | Uint8Array, cfg: WhisperFeatureConfig = WHISPER_DEFAULTS): Promise<LogMel & { seconds: number }> {
  const name = typeof input === 'string' ? input : '<wav buffer>';
  let bytes: Uint8Array;
  try {
    bytes = typeof input === 'string' ? await readFile(input) : input;
  } catch (e) {
    throw fail('E_AUDIO', `${name}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file: name }, e);
  }
  const wav = readWav(bytes, name);
  const samples = resample(wav.samples, wav.sampleRate, cfg.sampling_rate);
  return { ...logMelSpectrogram(samples, cfg), seconds: wav.samples.length / wav.sampleRate };
}
