/**
 * `nanomind run` on an encoder-decoder brick set (Whisper): one audio clip in, its transcript out.
 * The clip goes through the model's WhisperFeatureExtractor settings (./inputs/audio.ts), then
 * ./generation/seq2seq.ts decodes; `--input-ids` replaces the forced prefix (transformers.js'
 * `decoder_input_ids`).
 */
import { isTensorLike } from './feeds.js';
import { TENSOR } from '../formats/names.js';
import { fail } from '../errors.js';
import { generateSeq2Seq, whisperPrefix } from './generation/seq2seq.js';
import { createStreamDecoder } from './inputs/tokenizer.js';
import type { RuntimeModel, Turn } from './model.js';
import { peakRssMb, samplingFor, type GenerationFlags, type RunResult } from './run.js';
import { brickBackends } from './brick-set.js';

export async function transcribe(m: RuntimeModel, turn: Turn & { inputIds?: readonly number[] }, g: GenerationFlags = {}): Promise<RunResult> {
  const role = m.set.seq2seq;
  if (!role) throw fail('E_BRICKS_ROLE', `${m.dir}: not an encoder-decoder brick set`);
  const audio = turn.audio ?? [];
  if (turn.images?.length) throw fail('E_USAGE', `${m.dir}: this encoder-decoder model takes audio, not images`);
  if (audio.length !== 1)
    throw fail('E_USAGE', `${m.dir}: an encoder-decoder (speech) model transcribes exactly one clip per run; got ${audio.length}`,
      { hint: 'pass one --audio FILE.wav (or --input input_features=FILE.npy)' });
  if (turn.prompt || turn.system)
    throw fail('E_USAGE', `${m.dir}: --prompt/--system do not apply to a speech-to-text model`, { hint: 'use --input-ids to set the decoder prefix' });
  if (g.stopStrings?.length) throw fail('E_USAGE', '--stop is not supported for speech-to-text models');
  const before = m.set.brickMs();
  const input = await m.mediaInput('audio', audio[0]!);
  const features = isTensorLike(input) ? input : input[TENSOR.inputFeatures];
  if (!features) throw fail('E_INPUT_MISSING', `${m.dir}: no input_features for the audio encoder`);
  const stream = m.tokenizer ? createStreamDecoder(m.tokenizer) : undefined;
  const r = await generateSeq2Seq(m.set, role, features, {
    maxNewTokens: g.maxNewTokens, sampling: samplingFor(m, g.sampling),
    prefix: turn.inputIds ?? whisperPrefix(role.decoding, { language: g.language, task: g.task }),
    onToken: (t) => { const s = stream?.push(t); if (s) g.onText?.(s); },
  });
  const tail = stream?.flush();
  if (tail) g.onText?.(tail);
  const after = m.set.brickMs();
  const s = r.stats;
  const text = m.tokenizer?.decode([...r.tokens], { skipSpecialTokens: true }) ?? '';
  return {
    text: text.trim(), tokens: r.tokens, stopReason: r.stopReason,
    stats: {
      ttftMs: s.encodeMs + s.prefillMs, prefillTokPerS: s.prefixTokens / (s.prefillMs / 1000),
      decodeTokPerS: s.newTokens > 1 ? (s.newTokens - 1) / (s.decodeMs / 1000) : 0,
      promptTokens: s.prefixTokens, newTokens: s.newTokens, encodeMs: s.encodeMs, totalMs: s.totalMs,
      bricks: Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)])), backends: brickBackends(m.set), peakRssMb: peakRssMb(),
    },
  };
}
