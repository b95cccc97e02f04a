/**
 * WAV (RIFF/WAVE) reader: bytes → mono float32 samples in [-1, 1].
 *
 * Layout: "RIFF" <u32 size> "WAVE", then chunks <4-char id> <u32 LE size> <data> padded to even length.
 * Needed: "fmt " (format tag, channels, sample rate, byte rate, block align, bits per sample; with
 * WAVE_FORMAT_EXTENSIBLE the real tag is the first two bytes of the sub-format GUID) and "data".
 * Other chunks (LIST, fact, cue …) are skipped. "RF64" files are accepted when their data size field is
 * the 0xFFFFFFFF placeholder; that size, or one running past the end (a writer that streamed the file
 * and never patched the header), means "up to the end of the file", in whole frames.
 *
 * Encodings: integer PCM 8 (unsigned), 16, 24, 32 bit; IEEE float 32, 64 bit. Integers scale by 2^(bits−1)
 * (int16 / 32768), as soundfile, librosa and ffmpeg's s16→f32 do. Channels are averaged to mono, as
 * `librosa.load(mono=True)` — what Hugging Face model cards use to read audio — does.
 * Anything else — not RIFF, no fmt/data, A-law, ADPCM, zero channels — is E_AUDIO.
 */
import { fail } from '../../errors.js';

export interface WavAudio {
  /** Mono samples, channels averaged. */
  readonly samples: Float32Array;
  readonly sampleRate: number;
  /** Channels in the file (before the mix-down). */
  readonly channels: number;
  readonly bitsPerSample: number;
  readonly encoding: 'pcm' | 'float';
}

const FORMAT_PCM = 1;
const FORMAT_FLOAT = 3;
const FORMAT_EXTENSIBLE = 0xfffe;
const FORMAT_NAMES: Record<number, string> = { 2: 'MS ADPCM', 6: 'A-law', 7: 'µ-law', 0x11: 'IMA ADPCM', 0x55: 'MP3' };

const tag = (b: Uint8Array, at: number) => String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);

export function readWav(bytes: Uint8Array, name = '<wav buffer>'): WavAudio {
  const bad = (why: string, hint?: string) => fail('E_AUDIO', `${name}: ${why}`, { file: name, hint });
  if (bytes.length < 12 || !['RIFF', 'RF64'].includes(tag(bytes, 0)) || tag(bytes, 8) !== 'WAVE')
    throw bad('not a WAV file (no RIFF/WAVE header)', 'convert it first, e.g. `ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav`');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

  let fmt: { format: number; channels: number; rate: number; align: number; bits: number } | undefined;
  let data: { start: number; size: number } | undefined;
  for (let at = 12; at + 8 <= bytes.length;) {
    const id = tag(bytes, at);
    const size = dv.getUint32(at + 4, true);
    const body = at + 8;
    if (id === 'fmt ') {
      if (size < 16) throw bad(`fmt chunk is ${size} bytes, needs at least 16`);
      if (body + 16 > bytes.length) throw bad(`the file ends inside its fmt chunk (${bytes.length} bytes in all)`);
      let format = dv.getUint16(body, true);
      if (format === FORMAT_EXTENSIBLE) {
        if (size < 40 || body + 26 > bytes.length) throw bad('WAVE_FORMAT_EXTENSIBLE fmt chunk is truncated');
        format = dv.getUint16(body + 24, true); // first two bytes of the sub-format GUID
      }
      fmt = {
        format, channels: dv.getUint16(body + 2, true), rate: dv.getUint32(body + 4, true),
        align: dv.getUint16(body + 12, true), bits: dv.getUint16(body + 14, true),
      };
    } else if (id === 'data') {
      const rest = bytes.length - body;
      data = { start: body, size: size === 0xffffffff || size > rest ? rest : size };
      break; // the samples run to the end of the chunk; nothing after it is needed
    }
    at = body + size + (size & 1);
  }
  if (!fmt) throw bad('no fmt chunk before the data');
  if (!data) throw bad('no data chunk');
  const { format, channels, rate, align, bits } = fmt;
  if (format !== FORMAT_PCM && format !== FORMAT_FLOAT)
    throw bad(`unsupported encoding ${FORMAT_NAMES[format] ?? `0x${format.toString(16)}`}`, 'use PCM (8/16/24/32-bit) or float (32/64-bit) WAV');
  if (channels < 1) throw bad('0 channels');
  if (rate < 1) throw bad('sample rate is 0');
  const encoding = format === FORMAT_FLOAT ? 'float' : 'pcm';
  const ok = encoding === 'float' ? bits === 32 || bits === 64 : [8, 16, 24, 32].includes(bits);
  if (!ok) throw bad(`unsupported ${bits}-bit ${encoding} samples`);
  const width = bits / 8;
  if (align !== width * channels) throw bad(`block align ${align} does not match ${channels} channel(s) of ${bits}-bit samples`);

  const frames = Math.floor(data.size / align);
  const read = sampleReader(dv, encoding, bits);
  const samples = new Float32Array(frames);
  for (let f = 0, at = data.start; f < frames; f++) {
    let sum = 0;
    for (let c = 0; c < channels; c++, at += width) sum += read(at);
    samples[f] = sum / channels;
  }
  return { samples, sampleRate: rate, channels, bitsPerSample: bits, encoding };
}

function sampleReader(dv: DataView, encoding: 'pcm' | 'float', bits: number): (at: number) => number {
  if (encoding === 'float') return bits === 32 ? (at) => dv.getFloat32(at, true) : (at) => dv.getFloat64(at, true);
  switch (bits) {
    case 8: return (at) => (dv.getUint8(at) - 128) / 128;
    case 16: return (at) => dv.getInt16(at, true) / 32768;
    case 24: return (at) => ((dv.getUint8(at) | (dv.getUint8(at + 1) << 8) | (dv.getInt8(at + 2) << 16)) / 8388608);
    default: return (at) => dv.getInt32(at, true) / 2147483648;
  }
}

/** A mono 16-bit PCM WAV of `samples` (the format `readWav` reads first; used for synthetic clips). */
export function encodeWavPcm16(samples: Int16Array, rate = 16000): Buffer {
  const n = samples.length;
  const b = Buffer.alloc(44 + 2 * n);
  b.write('RIFF', 0); b.writeUInt32LE(36 + 2 * n, 4); b.write('WAVE', 8); b.write('fmt ', 12);
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(2 * rate, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); b.write('data', 36); b.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(samples[i]!, 44 + 2 * i);
  return b;
}

/** `seconds` of two tones at 16 kHz, as a WAV: a deterministic synthetic clip. */
export const toneWav = (seconds: number): Buffer =>
  encodeWavPcm16(Int16Array.from({ length: Math.round(16000 * seconds) }, (_, i) => Math.round(8000 * (Math.sin(i * 0.05) + 0.5 * Math.sin(i * 0.31)))));
