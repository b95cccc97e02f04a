/**
 * One answer of an encoder-decoder brick set (Whisper's transcript, Florence-2's caption): the runtime's
 * encoder-decoder generation with the text streamed as it comes, and the `run` stats the two verbs share.
 * The callers prepare the encoder input and the decoder prefix; `extra` adds time they spent before
 * (Florence-2's image → embeddings merge) to the encode and first-token figures.
 */
import type { Feeds, TensorLike } from './backend.js';
import { brickBackends } from './brick-set.js';
import { generateSeq2Seq } from './generation/seq2seq.js';
import { createStreamDecoder } from './inputs/tokenizer.js';
import type { RuntimeModel } from './model.js';
import { peakRssMb, samplingFor, type GenerationFlags, type RunResult } from './run.js';
import type { Seq2SeqRole } from './seq2seq-role.js';

export async function answerSeq2Seq(m: RuntimeModel, role: Seq2SeqRole, encoder: TensorLike | Feeds, prefix: readonly number[],
  g: GenerationFlags, before: Readonly<Record<string, number>>, extra: { ms: number; promptTokens?: number; prefillRows?: number } = { ms: 0 }): Promise<RunResult> {
  const stream = m.tokenizer ? createStreamDecoder(m.tokenizer) : undefined;
  const r = await generateSeq2Seq(m.set, role, encoder, {
    maxNewTokens: g.maxNewTokens, sampling: samplingFor(m, g.sampling), prefix: [...prefix],
    onToken: (t) => { const s = stream?.push(t); if (s) g.onText?.(s); },
  });
  const tail = stream?.flush();
  if (tail) g.onText?.(tail);
  const after = m.set.brickMs();
  const s = r.stats;
  const text = m.tokenizer?.decode([...r.tokens], { skipSpecialTokens: true }) ?? '';
  // Whisper prefills its decoder prefix; Florence-2's "prefill" is the merge plus the encoder over the prompt rows.
  const prefillTokPerS = extra.prefillRows !== undefined ? extra.prefillRows / ((s.encodeMs + extra.ms) / 1000) : s.prefixTokens / (s.prefillMs / 1000);
  return {
    text: text.trim(), tokens: r.tokens, stopReason: r.stopReason,
    stats: {
      ttftMs: extra.ms + s.encodeMs + s.prefillMs, prefillTokPerS,
      decodeTokPerS: s.newTokens > 1 ? (s.newTokens - 1) / (s.decodeMs / 1000) : 0,
      promptTokens: extra.promptTokens ?? s.prefixTokens, newTokens: s.newTokens, encodeMs: extra.ms + s.encodeMs, totalMs: extra.ms + s.totalMs,
      bricks: Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)])), backends: brickBackends(m.set), cpus: m.set.brickCpus(), peakRssMb: peakRssMb(),
    },
  };
}
