/**
 * One-shot generation (`nanomind run`) and a pipelined stream of images, each with its question: the
 * vision brick, in a worker thread, encodes image N+1 into a token-aware ring-buffer slot while the
 * decoder answers image N on this thread.
 */
import { fail } from '../errors.js';
import { availableParallelism } from 'node:os';
import { cpusOnThisMachine, threadAffinity } from './affinity.js';
import { TokenRingBuffer, slotBytesFor, type ReadLease, type RingStats } from './buffers/ring-buffer.js';
import { decoderThreadsFor, type PowerMonitor, type PowerReport, type PowerState } from './power/policy.js';
import type { RingBufferPlan } from '../formats/bundle.js';
import { ChatSession, type GenerateRequest, type GenerateResult, type GenerationStats } from './generation/chat-session.js';
import type { SamplingOptions } from './generation/sampling.js';
import { createStreamDecoder } from './inputs/tokenizer.js';
import { mediaRows, prepareTurn, type RuntimeModel, type Turn } from './model.js';
import { brickBackends } from './brick-set.js';
import { decoderThreadsBesideWorker, startEncoderWorker, type EncoderWorker } from './workers/encoder-client.js';

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
  /** Per brick opened on this thread: the CPUs its threads were created on (plan.json affinity), null when not pinned. */
  readonly cpus: Readonly<Record<string, readonly number[] | null>>;
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

export function runStats(g: GenerationStats, encodeMs: number, bricks: Record<string, number>, backends: Record<string, string>, cpus: Record<string, number[] | null> = {}): RunStats {
  return {
    ttftMs: g.ttftMs + encodeMs, prefillTokPerS: g.prefillTokPerS, decodeTokPerS: g.decodeTokPerS,
    promptTokens: g.promptTokens, newTokens: g.newTokens, encodeMs, totalMs: g.totalMs + encodeMs, bricks, backends, cpus, peakRssMb: peakRssMb(),
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
  return { text: text.trim(), tokens: r.tokens, stopReason: r.stopReason, stats: runStats(r.stats, encodeMs, bricks, brickBackends(m.set), m.set.brickCpus()) };
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
        const media = await m.prepareMedia(kind === 'vision' ? 'image' : 'audio', item);
        const r = await m.set.encode(enc.placeholderTokenId, media.input);
        encodeMs += r.ms;
        features[enc.placeholderTokenId] = concat(features[enc.placeholderTokenId], await mediaRows(media, r));
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
  /** Intra-op threads of the encoder worker (default: plan.json's affinity threads, else half the cores); the decoder keeps the model's. */
  readonly encoderThreads?: number;
  /** Linux: CPUs the encoder worker runs on (default: plan.json's cpuList for the vision brick, on the cores this machine has). */
  readonly encoderCpus?: readonly number[];
  readonly onAnswer?: (i: number, r: RunResult) => void;
  /** The battery-aware policy, sampled before each image; absent: unconstrained throughout. */
  readonly power?: PowerMonitor;
  /** Decoder intra-op threads at α = 1, which proportional scales (default: the cores the worker leaves). */
  readonly decoderThreads?: number;
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
  readonly answers: readonly (RunResult & { readonly image: string; readonly handoff: HandoffStats; readonly mode: StreamMode;
    readonly power: { readonly state: PowerState; readonly alpha: number } | null })[];
  /** Wall time of the whole stream, the encoder worker's start included. */
  readonly totalMs: number;
  readonly imagesPerS: number;
  readonly overlap: boolean;
  /** Overlap only: starting the worker(s) and opening their encoder sessions (part of totalMs), and their threads. */
  readonly encoderStartupMs: number | null;
  readonly encoderThreads: number | null;
  /** The ring after the stream (every slot FREE again), and what sized it. */
  readonly ring: RingStats & { readonly sizedFrom: 'plan.json' | 'options' | 'first image'; readonly rings: number };
  /** Per request, averaged over the stream: copies, bytes copied and ms spent in the slot copy. */
  readonly handoff: { readonly copiesPerRequest: number; readonly bytesCopiedPerRequest: number; readonly slotCopyMsPerRequest: number | null };
  /** Where the encoder worker ran (its thread's CPUs after pinning, threads, and why) and this thread's CPUs (the decoder). */
  readonly placement: {
    readonly encoder: { readonly cpus: readonly number[] | null; readonly threads: number | null; readonly why: string };
    readonly decoder: { readonly cpus: readonly number[] | null };
    /** Every brick this thread opened: the CPUs its threads were created on (null: not pinned). */
    readonly bricks: Readonly<Record<string, readonly number[] | null>>;
  };
  /** With a power policy: its state, α and transitions; encoder workers started; images encoded ahead and dropped at a turn to critical. */
  readonly power: (PowerReport & { readonly workersStarted: number; readonly reencoded: number }) | null;
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
 *
 * With `power`, the battery is sampled before each image (./power/policy.ts): unconstrained keeps the
 * pipeline; proportional keeps it but paces images to α of the rate and gives the decoder α of its
 * threads; critical stops the worker (its encoder sessions, and their memory, go with it), throws away
 * rows it encoded ahead, and runs a cascade on this thread: encode, release the encoder sessions,
 * answer. The decoder and its KV cache stay throughout. Going back up starts a new worker and ring.
 */
export async function runImageStream(m: RuntimeModel, images: readonly string[], prompt: string, g: ImageStreamOptions = {}): Promise<StreamResult> {
  if (!m.prompts) throw fail('E_TOKENIZER', `${m.dir}: no tokenizer / chat template for text prompts`);
  if (!images.length) throw fail('E_IMAGE', 'the image stream is empty');
  // Ring slots hold a fixed row count per image; anyres packs a different count per image size.
  if (m.anyres) throw fail('E_ANYRES_STREAM', `${m.dir}: LLaVA-OneVision anyres images have a row count per image size; the image stream's fixed slots cannot hold them`,
    { hint: 'run one image per `nanomind run --image`' });
  const placeholder = m.set.encoder('vision').placeholderTokenId;
  const hidden = m.set.hidden;
  if (!hidden) throw fail('E_BRICKS_ROLE', 'the decoder width is unknown; cannot size feature slots');
  // The worker opens its own ORT sessions; ORT's WebGPU provider crashes (SIGSEGV, measured with
  // onnxruntime-node 1.30) when a worker thread opens WebGPU sessions beside the main thread's, so an
  // encoder placed off the CPU runs on this thread, in turn (`overlap: false` in the result).
  const encoderOnCpu = m.set.encoder('vision').chain.every((b) => (m.set.placed[b.name]?.backend ?? 'ort-cpu') === 'ort-cpu');
  const overlap = (g.overlap ?? true) && encoderOnCpu;
  const t0 = performance.now();
  const workers: EncoderWorker[] = [];
  const place = encoderPlacement(m, g);
  if (g.power) await g.power.sample(); // the state for the first image decides whether a worker starts
  // ORT opens sessions synchronously on the calling thread: the decoder's open here while the worker opens the encoder's.
  let starting = overlap && g.power?.policy.state !== 'critical' ? startEncoderWorker({ dir: m.dir, threads: place.threads, cpus: place.cpus }) : undefined;
  starting?.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
  const startWorker = async (): Promise<EncoderWorker> => {
    const w = await (starting ?? startEncoderWorker({ dir: m.dir, threads: place.threads, cpus: place.cpus }));
    starting = undefined;
    workers.push(w);
    return w;
  };
  try {
    for (const b of [m.set.embed, m.set.decoder.brick]) if (b) await m.set.session(b.name);
    const r = await stream(m, images, prompt, g, { hidden, placeholder, overlap, startWorker });
    const totalMs = performance.now() - t0;
    const timed = r.answers.flatMap((a) => (a.handoff.slotCopyMs === null ? [] : [a.handoff.slotCopyMs]));
    const mean = (xs: readonly number[]) => xs.reduce((n, x) => n + x, 0) / xs.length;
    return {
      answers: r.answers, totalMs, imagesPerS: images.length / (totalMs / 1000), overlap,
      encoderStartupMs: workers.length ? workers.reduce((n, w) => n + w.startupMs, 0) : null, encoderThreads: workers[0]?.threads ?? null,
      ring: r.ring,
      handoff: { copiesPerRequest: mean(r.answers.map((a) => a.handoff.copies)), bytesCopiedPerRequest: mean(r.answers.map((a) => a.handoff.bytesCopied)),
        slotCopyMsPerRequest: timed.length ? mean(timed) : null },
      power: g.power ? { ...g.power.policy.report(), workersStarted: workers.length, reencoded: r.reencoded } : null,
      placement: {
        encoder: { cpus: workers[0]?.cpus ?? null, threads: workers[0]?.threads ?? null, why: workers.length ? place.why : 'no encoder worker (on this thread)' },
        // The decoder's threads run where its session was opened (pinned to the plan's CPUs), else where this thread may.
        decoder: { cpus: m.set.brickCpus()[m.set.decoder.brick.name] ?? (process.platform === 'linux' ? threadAffinity() : null) },
        bricks: m.set.brickCpus(),
      },
    };
  } finally {
    for (const w of workers) await w.terminate();
    await (await starting?.catch(() => undefined))?.terminate();
  }
}

/** The encoder worker's CPUs and threads: the options, else plan.json's affinity for a brick of the vision chain. */
function encoderPlacement(m: RuntimeModel, g: ImageStreamOptions): { cpus?: readonly number[]; threads?: number; why: string } {
  if (g.encoderCpus) return { cpus: g.encoderCpus, threads: g.encoderThreads, why: 'encoderCpus option' };
  const chain = m.set.encoder('vision').chain.map((b) => b.name);
  const a = m.bundle?.plan.affinity.find((x) => chain.includes(x.brick) && x.cpuList);
  if (!a?.cpuList) return { threads: g.encoderThreads, why: 'not pinned: plan.json has no cpuList for the vision brick' };
  if (process.platform !== 'linux') return { threads: g.encoderThreads, why: `not pinned: CPU affinity is set on Linux only` };
  const r = cpusOnThisMachine(a.cpuList);
  const threads = g.encoderThreads ?? (a.threads && r.cpus ? Math.min(a.threads, r.cpus.length) : undefined);
  return { cpus: r.cpus, threads, why: `${a.brick} on ${a.accelerator}: ${r.why}` };
}

/** How an image was answered: worker ∥ decoder, one after another on this thread, or the critical-state cascade. */
export type StreamMode = 'pipeline' | 'sequential' | 'cascade';

async function stream(m: RuntimeModel, images: readonly string[], prompt: string, g: ImageStreamOptions,
  o: { hidden: number; placeholder: number; overlap: boolean; startWorker: () => Promise<EncoderWorker> }) {
  const { hidden, placeholder } = o;
  const session = new ChatSession(m.set);
  const plan = g.ringPlan ?? visionRingPlan(m);
  const sizedFrom = g.ringPlan ? 'options' as const : plan ? 'plan.json' as const : 'first image' as const;
  const power = g.power;
  const encoderBricks = m.set.encoder('vision').chain.map((b) => b.name);
  const answers: (RunResult & { image: string; handoff: HandoffStats; mode: StreamMode; power: { state: PowerState; alpha: number } | null })[] = [];
  let rows = plan?.tokens;
  let ids: number[] = [];
  const rings: TokenRingBuffer[] = [];
  let reencoded = 0;
  // Sampled for images below this index (each image's battery is read once, before it).
  let sampledBefore = power ? 1 : 0;
  const newRing = (shared: boolean) => {
    const r = new TokenRingBuffer({ slots: g.slots ?? plan?.slots ?? 2, slotBytes: slotBytesFor({ tokens: rows!, hidden, dtype: 'float32' }), shared });
    rings.push(r);
    return r;
  };
  const setRows = (r: number) => {
    rows = r;
    ids = [...m.prompts!.encode([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: prompt }] }],
      { addGenerationPrompt: true, counts: { image: r } }).ids];
  };
  if (rows !== undefined) setRows(rows);

  // Proportional: the decoder gets α of its threads (its session reopens; the KV cache lives in the
  // ChatSession and stays), and each image is followed by a pause that brings the rate down to α.
  const baseThreads = g.decoderThreads ?? (o.overlap ? decoderThreadsBesideWorker() : availableParallelism());
  let decoderThreads: number | undefined; // undefined: as the model was opened
  const applyPower = async () => {
    const want = power && decoderThreadsFor(power.policy, baseThreads, decoderThreads);
    if (want === undefined || want === decoderThreads) return;
    decoderThreads = want;
    await m.set.release(m.set.decoder.brick.name, { threads: want });
  };
  let lastDone = performance.now();
  const pace = async () => {
    const now = performance.now();
    if (power?.policy.state === 'proportional') {
      const a = Math.max(0.1, power.policy.alpha); // a floor, so a battery just above T_low still makes progress
      await new Promise((r) => setTimeout(r, (now - lastDone) * (1 / a - 1)));
    }
    lastDone = performance.now();
  };

  /** Encodes image i on this thread into a slot of `ring` (the vision brick writes into slot memory when it can). */
  const encodeHere = async (ring: TokenRingBuffer, i: number, first?: EncodedRows): Promise<void> => {
    const lease = await ring.acquireWrite();
    try {
      if (first?.features) {
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
  const answerOne = async (ring: TokenRingBuffer, i: number, mode: StreamMode, lease?: ReadLease): Promise<void> => {
    lease ??= await ring.acquireRead();
    try {
      if (lease.meta.tokens !== rows)
        throw fail('E_MERGE_COUNT', `${images[i]}: ${lease.meta.tokens} feature rows, but the ring was sized for ${rows} (${sizedFrom})`,
          { file: images[i], hint: 'every image of a stream must give the same number of feature rows' });
      const [encodeMs = 0, slotCopyMs = 0, slotBytes = 0] = lease.meta.numbers ?? [];
      // The session copies the slot rows into its own arena (the merge), so the decoder never reads shared memory.
      const r = await answer(m, session, { inputIds: ids, features: { [placeholder]: lease.view('float32', rows! * hidden) } }, encodeMs, g);
      const handoff = { copies: (slotBytes > 0 ? 1 : 0) + 1, bytesCopied: slotBytes + rows! * hidden * 4, slotCopyMs: Number.isNaN(slotCopyMs) ? null : slotCopyMs };
      answers.push({ ...r, image: images[i]!, handoff, mode, power: power ? { state: power.policy.state, alpha: power.policy.alpha } : null });
      g.onAnswer?.(i, r);
    } finally {
      lease.release();
    }
  };
  const critical = () => power?.policy.state === 'critical';

  /** Worker ∥ decoder from image `from` until the end or until the battery turns critical; returns the next image. */
  const pipeline = async (from: number): Promise<number> => {
    const worker = await o.startWorker();
    try {
      const first = rows === undefined ? await worker.encode(images[from]!) : undefined;
      if (first) setRows(first.rows);
      const ring = newRing(true);
      if (first) await encodeHere(ring, from, first);
      const produced = worker.stream(ring.handle(), images.slice(first ? from + 1 : from));
      let next = from, stoppedForPower = false;
      const consumed = (async () => {
        try {
          for (; next < images.length; next++) {
            if (power && next >= sampledBefore) {
              await power.sample();
              sampledBefore = next + 1;
              if (critical()) { stoppedForPower = true; ring.close('power: critical, cascade from here'); return; }
            }
            await applyPower();
            await answerOne(ring, next, 'pipeline');
            await pace();
          }
        } catch (e) {
          ring.close(String(e)); // wakes the worker if it waits for a slot; it stops before its next image
          throw e;
        }
      })();
      const settled = await Promise.allSettled([produced, consumed]);
      const errors = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []))
        .filter((e) => !(stoppedForPower && (e as { code?: string }).code === 'E_TABM_CLOSED'));
      // The side that failed first closed the ring; the other then only reports E_TABM_CLOSED.
      if (errors.length) throw errors.find((e) => (e as { code?: string }).code !== 'E_TABM_CLOSED') ?? errors[0];
      // Rows the worker encoded ahead under the old state are dropped: the cascade encodes them again.
      // (tryAcquireRead on a closed, drained ring throws E_TABM_CLOSED: ask for READY slots first.)
      for (let l; ring.stats().ready > 0 && (l = ring.tryAcquireRead());) { l.release(); reencoded++; }
      return next;
    } finally {
      await worker.terminate(); // its encoder sessions close with it
    }
  };

  /** Image i on this thread: encode, (cascade: release the encoder sessions,) answer. */
  let here: TokenRingBuffer | undefined;
  const oneHere = async (i: number): Promise<void> => {
    const mode: StreamMode = critical() ? 'cascade' : 'sequential';
    let first: EncodedRows | undefined;
    if (rows === undefined) {
      first = await m.set.encode(placeholder, await m.mediaInput('image', { file: images[i]! }));
      setRows(first.rows);
    }
    here ??= newRing(false);
    await applyPower();
    await encodeHere(here, i, first);
    if (mode === 'cascade') for (const b of encoderBricks) await m.set.release(b);
    await answerOne(here, i, mode);
    await pace();
  };

  for (let i = 0; i < images.length;) {
    if (power && i >= sampledBefore) { await power.sample(); sampledBefore = i + 1; }
    if (o.overlap && !critical()) { i = await pipeline(i); continue; }
    await oneHere(i++);
  }
  // One ring per pipeline run (and one on this thread): counts summed, the peak over all.
  const all = rings.map((r) => r.stats());
  const sum = (k: 'free' | 'writing' | 'ready' | 'reading' | 'pendingWrites' | 'pendingReads' | 'committed' | 'released') => all.reduce((n, x) => n + x[k], 0);
  return {
    answers, reencoded,
    ring: { slots: all[0]!.slots, slotBytes: all[0]!.slotBytes, free: sum('free'), writing: sum('writing'), ready: sum('ready'), reading: sum('reading'),
      pendingWrites: sum('pendingWrites'), pendingReads: sum('pendingReads'), committed: sum('committed'), released: sum('released'),
      peakOccupied: Math.max(...all.map((x) => x.peakOccupied)), rings: rings.length, sizedFrom },
  };
}

interface EncodedRows { readonly rows: number; readonly ms: number; readonly features?: Float32Array }

function concat(a: Float32Array | undefined, b: Float32Array): Float32Array {
  if (!a) return b;
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
