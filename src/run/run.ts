/**
 * One-shot generation (`nanomind run`) and a pipelined stream of images, each with its question: the
 * vision brick, in a worker thread, encodes image N+1 into a token-aware ring-buffer slot while the
 * decoder answers image N on this thread.
 */
import { fail } from '../errors.js';
import { TokenRingBuffer, slotBytesFor, type RingStats } from './buffers/ring-buffer.js';
import type { RingBufferPlan } from '../formats/bundle.js';
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
  /** Ring slots; default: plan.json's ring for the vision encoder, else 2 (one read by the decoder, one written by the encoder). */
  readonly slots?: number;
  /**
   * The ring the compiler planned (slots, feature rows per image); default: the bundle's plan.json entry
   * whose `from` is a brick of the vision chain. Without one, the first image's rows size the slots.
   */
  readonly ringPlan?: Pick<RingBufferPlan, 'slots' | 'tokens'>;
  /** Intra-op threads of the encoder worker (default: half the cores, at least 1); the decoder keeps the model's. */
  readonly encoderThreads?: number;
  readonly onAnswer?: (i: number, r: RunResult) => void;
}

/**
 * The copies of one image's feature rows on their way from the encoder's output to the decoder's input
 * embeddings. onnxruntime-node rejects SharedArrayBuffer-backed tensors, so a worker's encoder output
 * is copied into the shared slot (1); the merge into the decoder's embeddings is a copy in every mode (1).
 */
export interface HandoffStats {
  readonly copies: number;
  readonly bytesCopied: number;
  /** Wall ms of the copy into the ring slot; 0 when the encoder wrote into the slot itself; null: not timed apart. */
  readonly slotCopyMs: number | null;
}

export interface StreamResult {
  readonly answers: readonly (RunResult & { readonly image: string; readonly handoff: HandoffStats })[];
  /** Wall time of the whole stream, the encoder worker's start included. */
  readonly totalMs: number;
  readonly imagesPerS: number;
  readonly overlap: boolean;
  /** Overlap only: starting the worker and opening its encoder sessions (part of totalMs), and its threads. */
  readonly encoderStartupMs: number | null;
  readonly encoderThreads: number | null;
  /** The ring after the stream (every slot FREE again), and what sized it. */
  readonly ring: RingStats & { readonly sizedFrom: 'plan.json' | 'options' | 'first image' };
  /** Per request, averaged over the stream: copies, bytes copied and ms spent in the slot copy. */
  readonly handoff: { readonly copiesPerRequest: number; readonly bytesCopiedPerRequest: number; readonly slotCopyMsPerRequest: number | null };
}

/** plan.json's ring whose producer is a brick of the vision encoder chain. */
export function visionRingPlan(m: RuntimeModel): RingBufferPlan | undefined {
  const chain = new Set(m.set.encoder('vision').chain.map((b) => b.name));
  return m.bundle?.plan.ringBuffers.find((r) => chain.has(r.from.slice(0, r.from.indexOf('.'))));
}

/**
 * Answers one question per image. With `overlap`, the vision encoder runs in a worker thread
 * (./workers/encoder-worker.ts) that claims, fills and commits the slots of a shared TABM ring itself
 * while this thread reads and releases them: the two threads meet only in the ring's state words.
 * Without `overlap`, each image is encoded (straight into slot memory) and answered in turn. Same
 * answers either way; only the wall time differs.
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
    const r = await stream(m, images, prompt, g, { hidden, placeholder, worker });
    const totalMs = performance.now() - t0;
    const timed = r.answers.flatMap((a) => (a.handoff.slotCopyMs === null ? [] : [a.handoff.slotCopyMs]));
    const mean = (xs: readonly number[]) => xs.reduce((n, x) => n + x, 0) / xs.length;
    return {
      answers: r.answers, totalMs, imagesPerS: images.length / (totalMs / 1000), overlap,
      encoderStartupMs: worker?.startupMs ?? null, encoderThreads: worker?.threads ?? null, ring: r.ring,
      handoff: { copiesPerRequest: mean(r.answers.map((a) => a.handoff.copies)), bytesCopiedPerRequest: mean(r.answers.map((a) => a.handoff.bytesCopied)),
        slotCopyMsPerRequest: timed.length ? mean(timed) : null },
    };
  } finally {
    await (worker ?? await starting?.catch(() => undefined))?.terminate();
  }
}

async function stream(m: RuntimeModel, images: readonly string[], prompt: string, g: ImageStreamOptions,
  o: { hidden: number; placeholder: number; worker: EncoderWorker | undefined }) {
  const { hidden, placeholder, worker } = o;
  const session = new ChatSession(m.set);
  const plan = g.ringPlan ?? visionRingPlan(m);
  const sizedFrom = g.ringPlan ? 'options' as const : plan ? 'plan.json' as const : 'first image' as const;
  // Without a plan, the first image is encoded before the ring exists: its rows size the slots.
  const first = plan ? undefined : worker ? await worker.encode(images[0]!)
    : await m.set.encode(placeholder, await m.mediaInput('image', { file: images[0]! }));
  const rows = plan?.tokens ?? first!.rows;
  // The decoder takes float32 rows whatever dtype the plan sized for, so slots hold float32.
  const ring = new TokenRingBuffer({ slots: g.slots ?? plan?.slots ?? 2, slotBytes: slotBytesFor({ tokens: rows, hidden, dtype: 'float32' }), shared: !!worker });
  const ids = m.prompts!.encode([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: prompt }] }],
    { addGenerationPrompt: true, counts: { image: rows } }).ids;
  const answers: (RunResult & { image: string; handoff: HandoffStats })[] = [];
  const rowBytes = rows * hidden * 4;

  /** This thread's producer: the first image's rows (copied in), or the vision brick writing into the slot. */
  const encodeHere = async (i: number): Promise<void> => {
    const lease = await ring.acquireWrite();
    try {
      if (i === 0 && first?.features) {
        const f = first.features, t = performance.now();
        lease.view('float32', f.length).set(f);
        lease.commit({ tokens: first.rows, dims: [first.rows, hidden], dtype: 'float32', numbers: [first.ms, performance.now() - t, f.byteLength] });
        return;
      }
      const r = await m.set.encode(placeholder, await m.mediaInput('image', { file: images[i]! }), { into: lease.view('float32') });
      // EncodeResult.direct: the encoder's last brick wrote into the slot itself (no copy); otherwise the
      // brick set copied its output in, inside the encoder's ms (not timed apart: NaN).
      lease.commit({ tokens: r.rows, dims: [r.rows, hidden], dtype: 'float32', numbers: [r.ms, r.direct ? 0 : NaN, r.direct ? 0 : r.features.byteLength] });
    } catch (e) {
      lease.abort();
      throw e;
    }
  };
  const answerOne = async (i: number): Promise<void> => {
    const lease = await ring.acquireRead();
    try {
      if (lease.meta.tokens !== rows)
        throw fail('E_MERGE_COUNT', `${images[i]}: ${lease.meta.tokens} feature rows, but the ring was sized for ${rows} (${sizedFrom})`,
          { file: images[i], hint: 'every image of a stream must give the same number of feature rows' });
      const [encodeMs = 0, slotCopyMs = 0, slotBytes = 0] = lease.meta.numbers ?? [];
      // The session copies the slot rows into its own arena (the merge), so the decoder never reads shared memory.
      const r = await answer(m, session, { inputIds: ids, features: { [placeholder]: lease.view('float32', rows * hidden) } }, encodeMs, g);
      const handoff = { copies: (slotBytes > 0 ? 1 : 0) + 1, bytesCopied: slotBytes + rowBytes, slotCopyMs: Number.isNaN(slotCopyMs) ? null : slotCopyMs };
      answers.push({ ...r, image: images[i]!, handoff });
      g.onAnswer?.(i, r);
    } finally {
      lease.release();
    }
  };

  if (worker) {
    // The worker claims and commits the slots itself; this thread only reads and releases them.
    if (first) await encodeHere(0);
    const produced = worker.stream(ring.handle(), images.slice(first ? 1 : 0));
    const consumed = (async () => {
      try {
        for (const i of images.keys()) await answerOne(i);
      } catch (e) {
        ring.close(String(e)); // wakes the worker if it waits for a slot; it stops before its next image
        throw e;
      }
    })();
    const settled = await Promise.allSettled([produced, consumed]);
    const errors = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    // The side that failed first closed the ring; the other then only reports E_TABM_CLOSED.
    if (errors.length) throw errors.find((e) => (e as { code?: string }).code !== 'E_TABM_CLOSED') ?? errors[0];
  } else {
    for (const i of images.keys()) { await encodeHere(i); await answerOne(i); }
  }
  return { answers, ring: { ...ring.stats(), sizedFrom } };
}

function concat(a: Float32Array | undefined, b: Float32Array): Float32Array {
  if (!a) return b;
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
