/**
 * `nanomind run` on a vision encoder-decoder brick set (Florence-2): one image and a task in, the
 * generated text out, as transformers.js' Florence2Processor + Florence2ForConditionalGeneration:
 *
 *   1. the task ('<CAPTION>', '<OCR>', '<CAPTION_TO_PHRASE_GROUNDING>a cat', or free text) becomes its
 *      prompt sentence (./inputs/families/florence2.ts), tokenized with the tokenizer's special tokens
 *      (<s> … </s>); `--input-ids` gives the prompt ids directly;
 *   2. the image goes through the CLIP image processor, the vision brick, and its features go in front
 *      of the prompt's embeddings, the mask growing by as many ones (the `prepend` merge, formats/merge.ts);
 *   3. ./generation/seq2seq.ts runs the encoder once and decodes from the decoder start token with the
 *      cross-attention K/V kept from its first step.
 */
import { fail } from '../errors.js';
import { prependRows } from '../formats/merge.js';
import { TENSOR } from '../formats/names.js';
import type { Feeds, TensorLike } from './backend.js';
import { int64, isTensorLike, tensor, toFloat32 } from './feeds.js';
import { asDeclared } from './generation/seq2seq.js';
import { answerSeq2Seq } from './seq2seq-answer.js';
import type { RuntimeModel, Turn } from './model.js';
import type { GenerationFlags, RunResult } from './run.js';

export interface CaptionResult extends RunResult {
  /** The task prompt's token ids (what the encoder reads after the image rows). */
  readonly promptIds: readonly number[];
}

export async function caption(m: RuntimeModel, turn: Turn & { inputIds?: readonly number[] }, g: GenerationFlags = {}): Promise<CaptionResult> {
  const role = m.set.seq2seq;
  const v = role?.vision;
  if (!role || !v) throw fail('E_BRICKS_ROLE', `${m.dir}: not a vision encoder-decoder brick set`);
  const images = turn.images ?? [];
  if (turn.audio?.length) throw fail('E_USAGE', `${m.dir}: this encoder-decoder model takes an image, not audio`);
  if (images.length !== 1)
    throw fail('E_USAGE', `${m.dir}: a vision encoder-decoder model (Florence-2) reads exactly one image per run; got ${images.length}`,
      { hint: 'pass one --image FILE' });
  if (turn.system) throw fail('E_USAGE', `${m.dir}: --system does not apply to a vision encoder-decoder model`);
  if (g.stopStrings?.length) throw fail('E_USAGE', '--stop is not supported for encoder-decoder models');
  if (g.language || g.task) throw fail('E_USAGE', '--language/--task apply to speech-to-text models only', { hint: "give Florence-2's task as --prompt, e.g. --prompt '<CAPTION>'" });
  const tasks = m.taskPrompts?.tasks ?? [];
  let promptIds: readonly number[];
  if (turn.inputIds) promptIds = turn.inputIds;
  else {
    const task = turn.prompt;
    if (!task) throw fail('E_USAGE', `${m.dir}: Florence-2 needs a task`, { hint: `pass --prompt with one of ${tasks.join(' ') || "the model's task tokens"} (or free text)` });
    if (!m.tokenizer) throw fail('E_TOKENIZER', `${m.dir}: no tokenizer.json to tokenize the task prompt`, { hint: 'pass --input-ids' });
    promptIds = m.tokenizer.encode(m.taskPrompts ? m.taskPrompts.construct(task) : task);
  }
  const before = m.set.brickMs();
  const t0 = performance.now();
  const input = await m.mediaInput('image', images[0]!);
  const pixels = isTensorLike(input) ? input : input[v.visionInput.name];
  if (!pixels) throw fail('E_INPUT_MISSING', `${m.dir}: no ${v.visionInput.name} for the vision brick`);
  const vis = await m.set.run(v.vision.name, { [v.visionInput.name]: asDeclared(pixels, v.visionInput, v.visionInput.name) } as Feeds);
  const features = vis[v.visionOutput];
  if (!features) throw fail('E_BRICK_RUN', `vision brick '${v.vision.name}' returned no '${v.visionOutput}'`);
  const emb = (await m.set.run(v.embed.name, { [TENSOR.inputIds]: int64(promptIds) } as Feeds))[TENSOR.inputsEmbeds];
  if (!emb) throw fail('E_BRICK_RUN', `embed brick '${v.embed.name}' returned no '${TENSOR.inputsEmbeds}'`);
  const hidden = emb.dims.at(-1)!;
  if (features.dims.at(-1) !== hidden)
    throw fail('E_MERGE_SHAPE', `image features are [${features.dims.join(', ')}] but the prompt embeddings have width ${hidden}`);
  const merged = prependRows(toFloat32(features, v.visionOutput), toFloat32(emb, TENSOR.inputsEmbeds), new Array<number>(promptIds.length).fill(1), hidden);
  const encoderFeeds: Record<string, TensorLike> = {
    [v.embedsInput]: tensor('float32', merged.embeds, [1, merged.rows, hidden]),
    [v.maskInput]: tensor('int64', merged.mask, [1, merged.rows]),
  };
  const mergeMs = performance.now() - t0;

  const r = await answerSeq2Seq(m, role, encoderFeeds, [role.decoding.decoderStartTokenId], g, before,
    { ms: mergeMs, promptTokens: promptIds.length, prefillRows: merged.rows });
  return { ...r, promptIds };
}
