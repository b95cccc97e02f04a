/**
 * One-shot generation (`nanomind run`) and a pipelined stream of images, each with its question: the
 * vision brick encodes image N+1 into a token-aware ring-buffer slot while the decoder answers image N.
 */
import { fail } from '../errors.js';
import { TokenRingBuffer, slotBytesFor } from './buffers/ring-buffer.js';
import { ChatSession, type GenerateResult, type GenerationStats } from './generation/chat-session.js';
import type { SamplingOptions } from './generation/sampling.js';
import { createStreamDecoder } from './inputs/tokenizer.js';
import { prepareTurn, type RuntimeModel, type Turn } from './model.js';

export interface GenerationFlags {
  readonly maxNewTokens?: number;
  /** Undefined: the model's generation_config (greedy when it says nothing); temperature 0 is greedy. */
  readonly sampling?: SamplingOptions;
  readonly stopStrings?: readonly string[];
  /** Streams new text as it becomes printable. */
  readonly onText?: (text: string) => void;
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

export function runStats(g: GenerationStats, encodeMs: number, bricks: Record<string, number>): RunStats {
  return {
    ttftMs: g.ttftMs + encodeMs, prefillTokPerS: g.prefillTokPerS, decodeTokPerS: g.decodeTokPerS,
    promptTokens: g.promptTokens, newTokens: g.newTokens, encodeMs, totalMs: g.totalMs + encodeMs, bricks, peakRssMb: peakRssMb(),
  };
}

/** Generates from a prepared prompt, streaming text and returning the answer without the stop token. */
async function answer(m: RuntimeModel, session: ChatSession, inputIds: readonly number[], features: Record<number, Float32Array>,
  encodeMs: number, g: GenerationFlags, before: Record<string, number> = m.set.brickMs()): Promise<RunResult> {
  const stream = m.tokenizer ? createStreamDecoder(m.tokenizer) : undefined;
  const r = await session.generate({ inputIds, features }, {
    maxNewTokens: g.maxNewTokens, sampling: samplingFor(m, g.sampling), stopStrings: g.stopStrings,
    decode: m.tokenizer && ((ids) => m.tokenizer!.decode(ids, { skipSpecialTokens: true })),
    onToken: (e) => { const t = stream?.push(e.token); if (t) g.onText?.(t); },
  });
  const tail = stream?.flush();
  if (tail) g.onText?.(tail);
  const after = m.set.brickMs();
  const bricks = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
  const text = r.text ?? m.tokenizer?.decode(r.tokens, { skipSpecialTokens: true }) ?? '';
  return { text: text.trim(), tokens: r.tokens, stopReason: r.stopReason, stats: runStats(r.stats, encodeMs, bricks) };
}

/** `nanomind run`: one prompt (text, images, audio) or raw ids, one answer. */
export async function runPrompt(m: RuntimeModel, turn: Turn & { inputIds?: readonly number[] }, g: GenerationFlags = {}): Promise<RunResult> {
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
    return answer(m, session, turn.inputIds, features, encodeMs, g, before);
  }
  const p = await prepareTurn(m, turn);
  return answer(m, session, p.inputIds, p.features, p.encodeMs, g, before);
}

export interface StreamResult {
  readonly answers: readonly (RunResult & { readonly image: string })[];
  readonly totalMs: number;
  readonly imagesPerS: number;
  readonly overlap: boolean;
}

/**
 * Answers one question per image. With `overlap`, a producer encodes images into a ring of TABM slots
 * (the vision brick writes straight into slot memory) while the consumer decodes; without it, each image
 * is encoded and answered in turn. Same answers either way; only the wall time differs.
 */
export async function runImageStream(m: RuntimeModel, images: readonly string[], prompt: string,
  g: GenerationFlags & { overlap?: boolean; slots?: number; onAnswer?: (i: number, r: RunResult) => void } = {}): Promise<StreamResult> {
  if (!m.prompts) throw fail('E_TOKENIZER', `${m.dir}: no tokenizer / chat template for text prompts`);
  const enc = m.set.encoder('vision');
  const hidden = m.set.hidden;
  if (!hidden) throw fail('E_BRICKS_ROLE', 'the decoder width is unknown; cannot size feature slots');
  const overlap = g.overlap ?? true;
  const t0 = performance.now();
  const session = new ChatSession(m.set);
  // The first image tells how many rows an image yields; every slot is sized for that.
  const first = await m.set.encode(enc.placeholderTokenId, await m.mediaInput('image', { file: images[0] }));
  const rows = first.rows;
  const ring = new TokenRingBuffer({ slots: g.slots ?? 2, slotBytes: slotBytesFor({ tokens: rows, hidden, dtype: 'float32' }) });
  const ids = m.prompts.encode([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: prompt }] }],
    { addGenerationPrompt: true, counts: { image: rows } }).ids;
  const answers: (RunResult & { image: string })[] = [];

  const encodeOne = async (i: number): Promise<void> => {
    const lease = await ring.acquireWrite();
    try {
      const into = lease.view('float32', rows * hidden);
      let ms = first.ms;
      if (i === 0) into.set(first.features);
      else ms = (await m.set.encode(enc.placeholderTokenId, await m.mediaInput('image', { file: images[i] }), { into })).ms;
      lease.commit({ tokens: rows, dims: [rows, hidden], tag: String(ms) });
    } catch (e) {
      lease.abort();
      ring.close(String(e));
      throw e;
    }
  };
  const answerOne = async (i: number): Promise<void> => {
    const lease = await ring.acquireRead();
    try {
      // The session copies the slot rows into its arena once; the slot is free again after prefill.
      const r = await answer(m, session, ids, { [enc.placeholderTokenId]: lease.view('float32', rows * hidden) }, Number(lease.meta.tag), g);
      answers.push({ ...r, image: images[i] });
      g.onAnswer?.(i, r);
    } finally {
      lease.release();
    }
  };

  if (overlap) {
    await Promise.all([
      (async () => { for (const i of images.keys()) await encodeOne(i); })(),
      (async () => { for (const i of images.keys()) await answerOne(i); })(),
    ]);
  } else {
    for (const i of images.keys()) { await encodeOne(i); await answerOne(i); }
  }
  const totalMs = performance.now() - t0;
  return { answers, totalMs, imagesPerS: images.length / (totalMs / 1000), overlap };
}

function concat(a: Float32Array | undefined, b: Float32Array): Float32Array {
  if (!a) return b;
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
