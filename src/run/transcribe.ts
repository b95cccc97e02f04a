/**
 * `nanomind run` on an encoder-decoder brick set (Whisper): one audio clip in, its transcript out.
 * The clip goes through the model's WhisperFeatureExtractor settings (./inputs/audio.ts), then
 * ./generation/seq2seq.ts decodes; `--input-ids` replaces the forced prefix (transformers.js'
 * `decoder_input_ids`).
 */
import { isTensorLike } from './feeds.js';
import { TENSOR } from '../formats/names.js';
import { fail } from '../errors.js';
import { whisperPrefix } from './generation/seq2seq.js';
import { answerSeq2Seq } from './seq2seq-answer.js';
import type { RuntimeModel, Turn } from './model.js';
import type { GenerationFlags, RunResult } from './run.js';

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
  return answerSeq2Seq(m, role, features, turn.inputIds ?? whisperPrefix(role.decoding, { language: g.language, task: g.task }), g, before);
}
