/**
 * One-shot generation (`nanomind run`) and a pipelined stream of images, each with its question: the
 * vision brick, in a worker thread, encodes image N+1 into a token-aware ring-buffer slot while the
 * decoder answers image N on this thread.
 */
import { fail } from '../errors.js';
import { TokenRingBuffer, slotBytesFor, type RingStats, type WriteLease } from './buffers/ring-buffer.js';
import { ChatSession, type GenerateRequest, type GenerateResult, type GenerationStats } from './generation/chat-session.js';
import type { SamplingOptions } from './generation/sampling.js';
import { createStreamDecoder } from './inputs/tokenizer.js';
import { prepareTurn, type RuntimeModel, type Turn } from './model.js';
import { brickBackends } from './brick-set.js';
import { startEncoderWorker, type EncoderWorker } from './workers/encoder-client.js';

export interface GenerationFlags {
  readonly maxNewTokens?: number;
  /** Undefined: the model's generation_config (greedy when it says nothing); temperature 0 is greedy. */
  readonly sampling?: SamplingOptions;
  readonly stopStrings?: readonly string[];
  /** Streams new text as it becomes printable. */
  readonly onText?: (text: string) => void;
  /** Speech-to-text (Whisper) only: language code and task of the forced prefix. */
  readonly language?: string;
  readonly task?: string;
}

export interface RunStats {
  readonly ttftMs: number;
  readonly prefillTokPerS: number;
  readonly decodeTokPerS: number;
  readonly promptTokens: number;
  readonly newTokens: number;
  readonly encodeMs: number;
  readonly totalMs: number;
  readonly bricks: Readonly<Record<string, number>>;
  /** The backend every brick runs on (ort-cpu, ort-webgpu, …). */
  readonly backends: Readonly<Record<string, string>>;
  readonly peakRssMb: number;
}

export interface RunResult {
  readonly text: string;
  readonly tokens: readonly number[];
  readonly stopReason: GenerateResult['stopReason'];
  readonly stats: RunStats;
}

/** Sampling as the user asked: temperature 0 means greedy; nothing asked means the model's default. */
export function samplingFor(m: RuntimeModel, s: SamplingOptions | undefined): SamplingOptions | undefined {
  const chosen = s ?? m.defaultSampling;
  if (!chosen || chosen.temperature === 0) return undefined;
  return chosen;
}

export const peakRssMb = (): number => process.resourceUsage().maxRSS / 1024;

export function runStats(g: GenerationStats, encodeMs: number, bricks: Record<string, number>, backends: Record<string, string>): RunStats {
  return {
    ttftMs: g.ttftMs + encodeMs, prefillTokPerS: g.prefillTokPerS, decodeTokPerS: g.decodeTokPerS,
    promptTokens: g.promptTokens, newTokens: g.newTokens, encodeMs, totalMs: g.totalMs + encodeMs, bricks, backends, peakRssMb: peakRssMb(),
  };
}

/** Generates from a prepared prompt, streaming text and returning the answer without the stop token. */
async function answer(m: RuntimeModel, session: ChatSession, req: GenerateRequest,
  encodeMs: number, g: GenerationFlags, before: Record<string, number> = m.set.brickMs()): Promise<RunResult> {
  const stream = m.tokenizer ? createStreamDecoder(m.tokenizer) : undefined;
  const r = await session.generate(req, {
    maxNewTokens: g.maxNewTokens, sampling: samplingFor(m, g.sampling), stopStrings: g.stopStrings,
    decode: m.tokenizer && ((ids) => m.tokenizer!.decode(ids, { skipSpecialTokens: true })),
    onToken: (e) => { const t = stream?.push(e.token); if (t) g.onText?.(t); },
  });
  const tail = stream?.flush();
  if (tail) g.onText?.(tail);
  const after = m.set.brickMs();
  const bricks = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
  const text = r.text ?? m.tokenizer?.decode(r.tokens, { skipSpecialTokens: true }) ?? '';
  return { text: text.trim(), tokens: r.tokens, stopReason: r.stopReason, stats: runStats(r.stats, encodeMs, bricks, brickBackends(m.set)) };
}

/** `nanomind run`: one prompt (text, images, audio) or raw ids, one answer. */
export async function runPrompt(m: RuntimeModel, turn: Turn & { inputIds?: readonly number[] }, g: GenerationFlags = {}): Promise<RunResult> {
  // Encoder-decoder models do not chat: Florence-2 captions (./caption.ts), Whisper transcribes (./transcribe.ts).
  if (m.set.seq2seq?.vision) return (await import('./caption.js')).caption(m, turn, g);
  if (m.set.seq2seq) return (await import('./transcribe.js')).transcribe(m, turn, g);
  const session = new ChatSession(m.set);
  const before = m.set.brickMs();
  if (turn.inputIds) {
    const features: Record<number, Float32Array> = {};
    let encodeMs = 0;
    for (const [kind, items] of [['vision', turn.images], ['audio', turn.audio]] as const)
      for (const item of items ?? []) {
        const enc = m.set.encoder(kind);
        const r = await m.set.encode(enc.placeholderTokenId, await m.mediaInput(kind === 'vision' ? 'image' : 'audio', item));
        encodeMs += r.ms;
        features[enc.placeholderTokenId] = concat(features[enc.placeholderTokenId], r.features);
      }
    return answer(m, session, { inputIds: turn.inputIds, features }, encodeMs, g, before);
  }
  const p = await prepareTurn(m, turn);
  return answer(m, session, { inputIds: p.inputIds, features: p.features, mropePositions: p.mropePositions }, p.encodeMs, g, before);
}

export interface ImageStreamOptions extends GenerationFlags {
  /**
   * true (default): a worker thread encodes image N+1 into a ring slot while this thread decodes image N;
   * false: each image is encoded and answered in turn on this thread (the comparison mode).
   */
  readonly overlap?: boolean;
  /** Ring slots (default 2: one being read by the decoder, one being written by the encoder). */
  readonly slots?: number;
  /** Intra-op threads of the encoder worker (default: half the cores, at least 1); the decoder keeps the model's. */
  readonly encoderThreads?: number;
  readonly onAnswer?: (i: number, r: RunResult) => void;
}

export interface StreamResult {
  readonly answers: readonly (RunResult & { readonly image: string })[];
  /** Wall time of the whole stream, the encoder worker's start included. */
  readonly totalMs: number;
  readonly imagesPerS: number;
  readonly overlap: boolean;
  /** Overlap only: starting the worker and opening its encoder sessions (part of totalMs), and its threads. */
  readonly encoderStartupMs: number | null;
  readonly encoderThreads: number | null;
  /** The ring after the stream (every slot FREE again). */
  readonly ring: RingStats;
}

/**
 * Answers one question per image. With `overlap`, the vision encoder runs in a worker thread
 * (./workers/encoder-worker.ts) that fills the slots of a shared TABM ring while this thread decodes
 * from them; the ring's state machine stays here: this thread acquires a slot, the worker writes its
 * bytes, this thread commits it on the reply. Without `overlap`, each image is encoded (straight into
 * slot memory) and answered in turn. Same answers either way; only the wall time differs.
 */
export async function runImageStream(m: RuntimeModel, images: readonly string[], prompt: string, g: ImageStreamOptions = {}): Promise<StreamResult> {
  if (!m.prompts) throw fail('E_TOKENIZER', `${m.dir}: no tokenizer / chat template for text prompts`);
  if (!images.length) throw fail('E_IMAGE', 'the image stream is empty');
  const placeholder = m.set.encoder('vision').placeholderTokenId;
  const hidden = m.set.hidden;
  if (!hidden) throw fail('E_BRICKS_ROLE', 'the decoder width is unknown; cannot size feature slots');
  // The worker opens its own ORT sessions; ORT's WebGPU provider crashes (SIGSEGV, measured with
  // onnxruntime-node 1.30) when a worker thread opens WebGPU sessions beside the main thread's, so an
  // encoder placed off the CPU runs on this thread, in turn (`overlap: false` in the result).
  const encoderOnCpu = m.set.encoder('vision').chain.every((b) => (m.set.placed[b.name]?.backend ?? 'ort-cpu') === 'ort-cpu');
  const overlap = (g.overlap ?? true) && encoderOnCpu;
  const t0 = performance.now();
  // ORT opens sessions synchronously on the calling thread: the decoder's open here while the worker opens the encoder's.
  const starting = overlap ? startEncoderWorker({ dir: m.dir, threads: g.encoderThreads }) : undefined;
  starting?.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
  let worker: EncoderWorker | undefined;
  try {
    for (const b of [m.set.embed, m.set.decoder.brick]) if (b) await m.set.session(b.name);
    worker = await starting;
    const r = await stream(m, images, prompt, g, { hidden, placeholder, shared: overlap, encoder: streamEncoder(m, placeholder, worker) });
    const totalMs = performance.now() - t0;
    return {
      answers: r.answers, totalMs, imagesPerS: images.length / (totalMs / 1000), overlap,
      encoderStartupMs: worker?.startupMs ?? null, encoderThreads: worker?.threads ?? null, ring: r.ring,
    };
  } finally {
    await (worker ?? await starting?.catch(() => undefined))?.terminate();
  }
}

interface StreamEncoder {
  /** Encodes the first image before the ring exists: its rows size the slots. */
  first(file: string): Promise<{ rows: number; ms: number; features?: Float32Array }>;
  /** Shares a shared ring's memory with the encoder. */
  attach(buffer: SharedArrayBuffer): void;
  into(file: string, lease: WriteLease): Promise<{ rows: number; ms: number }>;
}

/** The worker, or this thread's vision brick writing straight into slot memory. */
function streamEncoder(m: RuntimeModel, placeholder: number, worker: EncoderWorker | undefined): StreamEncoder {
  if (worker) return { first: (f) => worker.encode(f), attach: (b) => worker.attach(b), into: (f, lease) => worker.encode(f, lease) };
  return {
    first: async (f) => m.set.encode(placeholder, await m.mediaInput('image', { file: f })),
    attach: () => undefined,
    into: async (f, lease) => m.set.encode(placeholder, await m.mediaInput('image', { file: f }), { into: lease.view('float32') }),
  };
}

async function stream(m: RuntimeModel, images: readonly string[], prompt: string, g: ImageStreamOptions,
  o: { hidden: number; placeholder: number; shared: boolean; encoder: StreamEncoder }) {
  const { hidden, placeholder } = o;
  const session = new ChatSession(m.set);
  const first = await o.encoder.first(images[0]!);
  const rows = first.rows;
  const ring = new TokenRingBuffer({ slots: g.slots ?? 2, slotBytes: slotBytesFor({ tokens: rows, hidden, dtype: 'float32' }), shared: o.shared });
  if (ring.buffer instanceof SharedArrayBuffer) o.encoder.attach(ring.buffer);
  const ids = m.prompts!.encode([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: prompt }] }],
    { addGenerationPrompt: true, counts: { image: rows } }).ids;
  const answers: (RunResult & { image: string })[] = [];

  const encodeOne = async (i: number): Promise<void> => {
    const lease = await ring.acquireWrite();
    try {
      let ms = first.ms;
      if (i === 0) lease.view('float32', rows * hidden).set(first.features!);
      else {
        const r = await o.encoder.into(images[i]!, lease);
        if (r.rows !== rows)
          throw fail('E_MERGE_COUNT', `${images[i]}: ${r.rows} feature rows, but the stream's first image gave ${rows}`,
            { file: images[i], hint: 'every image of a stream must give the same number of feature rows' });
        ms = r.ms;
      }
      lease.commit({ tokens: rows, dims: [rows, hidden], dtype: 'float32', tag: String(ms) });
    } catch (e) {
      lease.abort();
      throw e;
    }
  };
  const answerOne = async (i: number): Promise<void> => {
    const lease = await ring.acquireRead();
    try {
      // The session copies the slot rows into its own arena, so the decoder never reads shared memory.
      const r = await answer(m, session, { inputIds: ids, features: { [placeholder]: lease.view('float32', rows * hidden) } }, Number(lease.meta.tag), g);
      answers.push({ ...r, image: images[i]! });
      g.onAnswer?.(i, r);
    } finally {
      lease.release();
    }
  };

  if (o.shared) {
    // A failing side closes the ring (waking the other) and both stop before their next image.
    let stop = false;
    const loop = async (step: (i: number) => Promise<void>) => {
      try {
        for (const i of images.keys()) { if (stop) return; await step(i); }
      } catch (e) {
        stop = true;
        ring.close(String(e));
        throw e;
      }
    };
    const settled = await Promise.allSettled([loop(encodeOne), loop(answerOne)]);
    const errors = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    // The side that failed first closed the ring; the other then only reports E_TABM_CLOSED.
    if (errors.length) throw errors.find((e) => (e as { code?: string }).code !== 'E_TABM_CLOSED') ?? errors[0];
  } else {
    for (const i of images.keys()) { await encodeOne(i); await answerOne(i); }
  }
  return { answers, ring: ring.stats() };
}

function concat(a: Float32Array | undefined, b: Float32Array): Float32Array {
  if (!a) return b;
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
