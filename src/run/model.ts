/**
 * A runnable model: a brick set plus what turns user input into its feeds — tokenizer, chat template,
 * image and audio preprocessing from the model folder's JSON files. `run`, `chat`, `bench` and `eval`
 * all start here; none of them touches ORT or a manifest directly.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { BUNDLE_FILE, readBundle, type Bundle } from '../formats/bundle.js';
import { readJsonFile } from '../formats/json-file.js';
import type { TensorLike } from './backend.js';
import { openBrickSet, type BrickSet, type EncodeResult } from './brick-set.js';
import { tensor } from './feeds.js';
import { audioFeatures, loadFeatureExtractorConfig, type WhisperFeatureConfig } from './inputs/audio.js';
import { loadPromptBuilder, type ChatMessage, type ContentPart, type MediaKind, type PromptBuilder } from './inputs/chat-template.js';
import { loadImageProcessorConfig, preprocessImage, type ImageProcessorConfig } from './inputs/image.js';
import { readNpyFile } from './inputs/npy.js';
import { loadTokenizer, type TextTokenizer } from './inputs/tokenizer.js';
import type { SamplingOptions } from './generation/sampling.js';

export interface OpenModelOptions {
  readonly threads?: number;
  readonly checkHashes?: boolean;
}

export interface RuntimeModel {
  readonly dir: string;
  readonly set: BrickSet;
  /** Present when `dir` is a compiled bundle (bundle.json + plan.json). */
  readonly bundle?: Bundle;
  /** One line per brick the bundle places on an accelerator this machine cannot drive (it runs on the CPU). */
  readonly notices: readonly string[];
  /** Absent for a brick set without tokenizer files (then only raw `--input-ids` work). */
  readonly tokenizer?: TextTokenizer;
  readonly prompts?: PromptBuilder;
  /** From generation_config.json: the model's default decoding (greedy when it says nothing). */
  readonly defaultSampling?: SamplingOptions;
  /** The model input for one media item, from a file (image/WAV) or a .npy tensor. */
  mediaInput(kind: MediaKind, item: MediaItem): Promise<TensorLike>;
  close(): Promise<void>;
}

/** One image or audio clip: a file to preprocess, or a ready tensor (`--input pixel_values=x.npy`). */
export type MediaItem = { readonly file: string } | { readonly tensor: TensorLike };

const exists = async (p: string) => (await stat(p).catch(() => undefined))?.isFile() ?? false;

export async function openModel(dir: string, opts: OpenModelOptions = {}): Promise<RuntimeModel> {
  const bundle = (await exists(join(dir, BUNDLE_FILE))) ? await readBundle(dir, { checkHashes: opts.checkHashes ?? true }) : undefined;
  // A bundle's hashes were just checked; its bricks.json copy lists the same files.
  const set = await openBrickSet(dir, { threads: opts.threads, checkHashes: bundle ? false : opts.checkHashes });
  const available = new Set<string>([set.backend.id]);
  const notices = (bundle?.manifest.bricks ?? []).filter((b) => !available.has(b.backend)).map((b) =>
    `brick '${b.name}' is placed on ${b.accelerator} (${b.backend}), which this machine cannot run; using its portable ONNX on ${set.backend.id}`);
  try {
    const tokenizer = (await exists(join(dir, 'tokenizer.json'))) ? await loadTokenizer(dir) : undefined;
    const prompts = tokenizer ? await loadPromptBuilder(dir, tokenizer).catch((e) => {
      if ((e as { code?: string }).code === 'E_CHAT_TEMPLATE' && !/parse|raise/i.test((e as Error).message)) return undefined;
      throw e;
    }) : undefined;
    let imageConfig: ImageProcessorConfig | undefined;
    let audioConfig: WhisperFeatureConfig | undefined;
    const preprocessor = join(dir, 'preprocessor_config.json');
    if (await exists(preprocessor)) {
      if (set.encoders.some((e) => e.kind === 'vision')) imageConfig = await loadImageProcessorConfig(dir);
      if (set.encoders.some((e) => e.kind === 'audio') || set.seq2seq?.encoder.kind === 'audio') audioConfig = await loadFeatureExtractorConfig(dir);
    }
    return {
      dir, set, bundle, notices, tokenizer, prompts, defaultSampling: await readDefaultSampling(dir),
      async mediaInput(kind, item) {
        if ('tensor' in item) return item.tensor;
        if (kind === 'image') {
          if (!imageConfig) throw fail('E_PREPROCESSOR', `${dir}: no preprocessor_config.json for images`, { hint: 'pass the tensor with --input pixel_values=FILE.npy' });
          const px = await preprocessImage(item.file, imageConfig);
          return tensor('float32', px.data, px.dims);
        }
        if (!audioConfig) throw fail('E_PREPROCESSOR', `${dir}: no preprocessor_config.json for audio`, { hint: 'pass the tensor with --input input_features=FILE.npy' });
        const mel = await audioFeatures(item.file, audioConfig);
        return tensor('float32', mel.data, mel.dims);
      },
      close: () => set.close(),
    };
  } catch (e) {
    await set.close();
    throw e;
  }
}

async function readDefaultSampling(dir: string): Promise<SamplingOptions | undefined> {
  const file = join(dir, 'generation_config.json');
  if (!(await exists(file))) return undefined;
  const g = await readJsonFile(file, 'E_CONFIG_INVALID') as Record<string, unknown>;
  if (g.do_sample !== true) return undefined;
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return { temperature: num(g.temperature), topK: num(g.top_k), topP: num(g.top_p), repetitionPenalty: num(g.repetition_penalty) };
}

/** Reads `--input NAME=FILE.npy` tensors (float32, int64, … as stored). */
export async function readInputTensors(items: Readonly<Record<string, string>>): Promise<Record<string, TensorLike>> {
  const out: Record<string, TensorLike> = {};
  for (const [name, file] of Object.entries(items)) {
    const a = await readNpyFile(file);
    out[name] = tensor(a.dtype, a.data as TensorLike['data'], a.shape);
  }
  return out;
}

export interface Turn {
  /** The user's text. */
  readonly prompt?: string;
  readonly system?: string;
  readonly images?: readonly MediaItem[];
  readonly audio?: readonly MediaItem[];
}

export interface PreparedTurn {
  readonly inputIds: number[];
  readonly features: Record<number, Float32Array>;
  readonly encodeMs: number;
  /** The new user message, for a conversation history. */
  readonly message: ChatMessage;
}

/**
 * Encodes the turn's media (feature rows decide how many placeholder tokens each item expands to), then
 * renders the conversation with the chat template and expands the placeholders.
 */
export async function prepareTurn(m: RuntimeModel, turn: Turn, history: readonly ChatMessage[] = [],
  encoded: Readonly<Record<number, Float32Array>> = {}): Promise<PreparedTurn> {
  if (!m.prompts || !m.tokenizer)
    throw fail('E_TOKENIZER', `${m.dir}: no tokenizer.json / chat template, so text prompts cannot be encoded`, { hint: 'pass token ids with --input-ids' });
  const features: Record<number, Float32Array[]> = {};
  const counts: Record<MediaKind, number[]> = { image: [], audio: [] };
  let encodeMs = 0;
  for (const kind of ['image', 'audio'] as const) {
    const items = (kind === 'image' ? turn.images : turn.audio) ?? [];
    if (!items.length) continue;
    const enc = m.set.encoder(kind === 'image' ? 'vision' : 'audio');
    for (const item of items) {
      const r: EncodeResult = await m.set.encode(enc.placeholderTokenId, await m.mediaInput(kind, item));
      encodeMs += r.ms;
      (features[enc.placeholderTokenId] ??= []).push(r.features);
      counts[kind].push(r.rows);
    }
  }
  const parts: ContentPart[] = [
    ...(turn.images ?? []).map(() => ({ type: 'image' as const })),
    ...(turn.audio ?? []).map(() => ({ type: 'audio' as const })),
    { type: 'text', text: turn.prompt ?? '' },
  ];
  const message: ChatMessage = { role: 'user', content: parts.length === 1 ? turn.prompt ?? '' : parts };
  const messages: ChatMessage[] = [...(turn.system && !history.length ? [{ role: 'system', content: turn.system }] : []), ...history, message];
  // Earlier turns' media are already in the KV cache; only this turn's are counted and merged.
  const previous = countMedia(history);
  const encodedPrompt = m.prompts.encode(messages, {
    addGenerationPrompt: true,
    counts: { image: [...previous.image.map((n) => n), ...counts.image], audio: [...previous.audio, ...counts.audio] },
  });
  const merged: Record<number, Float32Array> = { ...encoded };
  for (const [id, list] of Object.entries(features)) merged[Number(id)] = concatRows([...(encoded[Number(id)] ? [encoded[Number(id)]] : []), ...list]);
  return { inputIds: encodedPrompt.ids, features: merged, encodeMs, message: { ...message, rows: counts } as ChatMessage };
}

function countMedia(history: readonly ChatMessage[]): Record<MediaKind, number[]> {
  const out: Record<MediaKind, number[]> = { image: [], audio: [] };
  for (const h of history) {
    const rows = (h as ChatMessage & { rows?: Record<MediaKind, number[]> }).rows;
    if (rows) { out.image.push(...rows.image); out.audio.push(...rows.audio); }
  }
  return out;
}

function concatRows(parts: readonly Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
