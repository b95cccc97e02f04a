/**
 * A `nanomind eval` question set (a folder with eval.jsonl: an image, a typed question or the WAV of a
 * spoken one, and the answer) as quantize's eval items: the prompt's token ids and the raw encoder
 * inputs, prepared exactly as the runtime prepares them (chat template, placeholder expansion, image and
 * audio preprocessing), and the answer's token ids followed by the first stop id, so an exact match
 * means the same answer and nothing after it.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { EMBEDDED_EVAL_SET } from '../eval/embedded.js';
import { loadEvalSet as loadQuestionSet } from '../eval/index.js';
import { fail } from '../errors.js';
import { isTensorLike } from '../run/feeds.js';
import { openModel, prepareTurn, type MediaItem, type PreparedMedia, type RuntimeModel } from '../run/model.js';
import type { EvalItem, Prompt } from './greedy.js';

/** `builtin` names the embedded model's held-out set. */
export const questionSetDir = (set: string): string => (set === 'builtin' ? EMBEDDED_EVAL_SET : set);

/** A turn prepared as the runtime prepares it: prompt ids and the raw input of each encoder it uses. */
export async function preparePrompt(m: RuntimeModel, prompt: string, image?: string, audio?: string): Promise<Prompt> {
  // each file is decoded and preprocessed once: the tensor both sizes the prompt and becomes the input
  const media: Record<string, ort.Tensor> = {};
  const items: Record<'image' | 'audio', MediaItem[]> = { image: [], audio: [] };
  const packs: Record<number, NonNullable<PreparedMedia['pack']>> = {};
  for (const [kind, file] of [['image', image], ['audio', audio]] as const) {
    if (!file) continue;
    const prepared = await m.prepareMedia(kind, { file });
    items[kind].push({ prepared });
    if (prepared.pack) packs[m.set.encoder(kind === 'image' ? 'vision' : 'audio').placeholderTokenId] = prepared.pack;
    const feeds = isTensorLike(prepared.input) ? { [m.set.encoder(kind === 'image' ? 'vision' : 'audio').input.name]: prepared.input } : prepared.input;
    for (const [name, t] of Object.entries(feeds)) media[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, [...t.dims]);
  }
  const turn = await prepareTurn(m, { prompt, images: items.image, audio: items.audio });
  return { inputIds: turn.inputIds.map(BigInt), media, ...(turn.mropePositions ? { positions3: turn.mropePositions } : {}), ...(Object.keys(packs).length ? { packs } : {}) };
}

async function withModel<T>(bricksDir: string, what: string, fn: (m: RuntimeModel & { tokenizer: NonNullable<RuntimeModel['tokenizer']> }) => Promise<T>): Promise<T> {
  const m = await openModel(bricksDir);
  try {
    if (!m.tokenizer) throw fail('E_QUANT_EVAL', `${bricksDir}: no tokenizer.json, so ${what} cannot be encoded`);
    return await fn(m as RuntimeModel & { tokenizer: NonNullable<RuntimeModel['tokenizer']> });
  } finally {
    await m.close();
  }
}

export async function evalItemsFromQuestions(bricksDir: string, setDir: string): Promise<EvalItem[]> {
  const questions = await loadQuestionSet(setDir);
  return withModel(bricksDir, `the questions of ${setDir}`, async (m) => {
    const stop = m.set.eosTokenIds[0];
    if (stop === undefined) throw fail('E_QUANT_EVAL', `${bricksDir}: no eos token, so an exact answer cannot be told from a longer one`);
    const items: EvalItem[] = [];
    for (const q of questions) {
      const spoken = q.modality === 'spoken' && q.audio;
      items.push({
        prompt: await preparePrompt(m, spoken ? '' : q.question, q.image && join(setDir, q.image), spoken ? join(setDir, q.audio!) : undefined),
        answer: [...m.tokenizer.encode(q.answer, { addSpecialTokens: false }), stop],
      });
    }
    return items;
  });
}

const IMAGE_EXT = /\.(png|jpe?g|webp|gif|tiff?)$/i;

/**
 * Calibration prompts from a plain media folder, as rknn-toolkit2 takes a list of images: every image
 * (with the next line of `prompts.txt`, or of `fallback`) and, when the folder has WAVs, every clip
 * (with an image, as a spoken question), interleaved. Undefined when the folder holds no images and no WAVs.
 */
export async function promptsFromMediaFolder(bricksDir: string, dir: string, fallback: readonly string[]): Promise<Prompt[] | undefined> {
  const names = (await readdir(dir).catch(() => undefined))?.sort();
  if (!names) return undefined; // the caller reports an unreadable folder
  const images = names.filter((n) => IMAGE_EXT.test(n)).map((n) => join(dir, n));
  const clips = names.filter((n) => /\.wav$/i.test(n)).map((n) => join(dir, n));
  if (!images.length && !clips.length) return undefined;
  const given = names.includes('prompts.txt') ? (await readFile(join(dir, 'prompts.txt'), 'utf8')).split('\n').map((l) => l.trim()).filter(Boolean) : [];
  const texts = given.length ? given : fallback;
  return withModel(bricksDir, `the prompts for ${dir}`, async (m) => {
    const hasVision = m.set.encoders.some((e) => e.kind === 'vision');
    const typed: Prompt[] = [], spoken: Prompt[] = [];
    for (const [k, image] of (hasVision ? images : []).entries()) typed.push(await preparePrompt(m, texts[k % texts.length]!, image));
    for (const [k, clip] of clips.entries())
      spoken.push(await preparePrompt(m, '', hasVision && images.length ? images[k % images.length] : undefined, clip));
    // interleaved, so that calibration and the held-out tail both see images and clips
    return Array.from({ length: Math.max(typed.length, spoken.length) }, (_, k) => [typed[k], spoken[k]]).flat().filter((p): p is Prompt => !!p);
  });
}
