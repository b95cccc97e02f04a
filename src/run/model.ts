/**
 * A runnable model: a brick set plus what turns user input into its feeds — tokenizer, chat template,
 * image and audio preprocessing from the model folder's JSON files. `run`, `chat`, `bench` and `eval`
 * all start here; none of them touches ORT or a manifest directly.
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { BUNDLE_FILE, readBundle, type Bundle, type BundleBrick } from '../formats/bundle.js';
import { readJsonFile } from '../formats/json-file.js';
import { noKvCacheNotice } from '../formats/kv-cache.js';
import type { Feeds, TensorLike } from './backend.js';
import { loadFamilyProcessor, type FamilyProcessor } from './inputs/families/index.js';
import { florence2TaskPrompts, type TaskPrompts } from './inputs/families/florence2.js';
import { nativeConfigFile } from './backends/native/native.js';
import { ANYRES_NEEDS_NEWLINE, openAnyres, type AnyresRuntime } from './anyres.js';
import { cpusOnThisMachine } from './affinity.js';
import { openBrickSet, type RuntimeEngine, type BrickPlacement, type BrickSet, type EncodeResult, type EncoderRole } from './brick-set.js';
import { tensor } from './feeds.js';
import { audioFeatures, loadFeatureExtractorConfig, type WhisperFeatureConfig } from './inputs/audio.js';
import { loadPromptBuilder, type ChatMessage, type ContentPart, type MediaKind, type PromptBuilder } from './inputs/chat-template.js';
import { loadImageProcessorConfig, preprocessImage, type ImageProcessorConfig, type Resampler } from './inputs/image.js';
import { readNpyFile } from './inputs/npy.js';
import { loadTokenizer, type TextTokenizer } from './inputs/tokenizer.js';
import type { SamplingOptions } from './generation/sampling.js';

export interface OpenModelOptions {
  readonly threads?: number;
  readonly checkHashes?: boolean;
  /** Image resampling: 'pillow' (default, as Python transformers) or 'sharp-affine' (as transformers.js). */
  readonly resampler?: Resampler;
  /** The decoder's engine when it has a native pack (see OpenBrickSetOptions.engine); default 'auto'. */
  readonly engine?: RuntimeEngine;
}

export interface RuntimeModel {
  readonly dir: string;
  readonly set: BrickSet;
  /** Present when `dir` is a compiled bundle (bundle.json + plan.json). */
  readonly bundle?: Bundle;
  /** One line per brick the bundle places on an accelerator this machine cannot drive (it runs on the CPU), and one for a decoder without a KV cache. */
  readonly notices: readonly string[];
  /** Absent for a brick set without tokenizer files (then only raw `--input-ids` work). */
  readonly tokenizer?: TextTokenizer;
  readonly prompts?: PromptBuilder;
  /** From generation_config.json: the model's default decoding (greedy when it says nothing). */
  readonly defaultSampling?: SamplingOptions;
  /** The model family's image processor (Qwen2-VL, Idefics3, …); absent: the generic resize/normalize. */
  readonly imageFamily?: FamilyProcessor;
  /** A vision encoder-decoder's task prompts (Florence-2: '<CAPTION>' → its sentence), from preprocessor_config.json. */
  readonly taskPrompts?: TaskPrompts;
  /** LLaVA-OneVision with image_newline: tiles are encoded and packed (./anyres.ts). */
  readonly anyres?: AnyresRuntime;
  /** One media item prepared for its encoder, from a file (image/WAV), a .npy tensor or an earlier call. */
  prepareMedia(kind: MediaKind, item: MediaItem): Promise<PreparedMedia>;
  /** `prepareMedia(…).input`. */
  mediaInput(kind: MediaKind, item: MediaItem): Promise<TensorLike | Feeds>;
  close(): Promise<void>;
}

/** One media item ready for its encoder chain. */
export interface PreparedMedia {
  /** What the chain's first brick takes: one tensor, or feeds by input name (a family's extra inputs). */
  readonly input: TensorLike | Feeds;
  /** The prompt text that replaces this item's placeholder (family processors), instead of a row count. */
  readonly expansion?: string;
  /** The processor's tensors (e.g. image_grid_thw), for the family's position rule. */
  readonly tensors?: Readonly<Record<string, TensorLike>>;
  /** The rows to merge from the encoder's result when they are not its output as is (LLaVA-OneVision anyres packing). */
  readonly pack?: (r: EncodeResult) => Promise<Float32Array>;
}

/** The feature rows of one encoded media item: its family's packing of the encoder output, or the output itself. */
export const mediaRows = async (media: PreparedMedia, r: EncodeResult): Promise<Float32Array> => (media.pack ? media.pack(r) : r.features);

/**
 * One image or audio clip: a file to preprocess, its encoded bytes (PNG/JPEG…, WAV: a server decodes
 * uploads in memory, never through the disk), a ready tensor (`--input pixel_values=x.npy`), or prepared media.
 */
export type MediaItem = { readonly file: string } | { readonly bytes: Uint8Array } | { readonly tensor: TensorLike } | { readonly prepared: PreparedMedia };

const exists = async (p: string) => (await stat(p).catch(() => undefined))?.isFile() ?? false;

export async function openModel(dir: string, opts: OpenModelOptions = {}): Promise<RuntimeModel> {
  const bundle = (await exists(join(dir, BUNDLE_FILE))) ? await readBundle(dir, { checkHashes: opts.checkHashes ?? true }) : undefined;
  // A bundle's hashes were just checked; its bricks.json copy lists the same files.
  const set = await openBrickSet(dir, { threads: opts.threads, checkHashes: bundle ? false : opts.checkHashes, placement: bundle && bundlePlacement(bundle), engine: opts.engine });
  const notices = placementNotices(bundle, set);
  const kv = noKvCacheNotice(set.manifest.bricks);
  if (kv) notices.push(kv);
  try {
    const tokenizer = (await exists(join(dir, 'tokenizer.json'))) ? await loadTokenizer(dir) : undefined;
    const prompts = tokenizer ? await loadPromptBuilder(dir, tokenizer).catch((e) => {
      if ((e as { code?: string }).code === 'E_CHAT_TEMPLATE' && !/parse|raise/i.test((e as Error).message)) return undefined;
      throw e;
    }) : undefined;
    let imageConfig: ImageProcessorConfig | undefined;
    let audioConfig: WhisperFeatureConfig | undefined;
    let imageFamily: FamilyProcessor | undefined;
    let taskPrompts: TaskPrompts | undefined;
    let anyres: AnyresRuntime | undefined;
    const preprocessor = join(dir, 'preprocessor_config.json');
    const vision = set.encoders.find((e) => e.kind === 'vision');
    if (await exists(preprocessor)) {
      if (vision) {
        imageFamily = await loadFamilyProcessor(dir);
        // LLaVA-OneVision: an encoder that takes image_sizes packs the tiles in-graph (the family's feeds as
        // they are). One that does not (the onnx-community exports) gets the tiles as a batch and nanomind
        // packs the rows (./anyres.ts) when image_newline exists somewhere (src/formats/image-newline.ts);
        // without it, the base image alone through the generic processor, as transformers.js runs it, and one notice.
        if (imageFamily?.family === 'llava-onevision' && !vision.chain[0]!.inputs.some((i) => i.name === 'image_sizes')) {
          anyres = await openAnyres(set, vision);
          if (!anyres) { imageFamily = undefined; notices.push(ANYRES_NEEDS_NEWLINE); }
        }
        if (!imageFamily) imageConfig = await loadImageProcessorConfig(dir);
        else notices.push(...imageFamily.notices);
      }
      if (set.encoders.some((e) => e.kind === 'audio') || set.seq2seq?.encoder.kind === 'audio') audioConfig = await loadFeatureExtractorConfig(dir);
      // Florence-2: a plain CLIP image processor, and the task tables its processor reads from the same file.
      if (set.seq2seq?.vision) {
        imageConfig = await loadImageProcessorConfig(dir);
        // Florence-2's generation_config asks for beam search; the runtime has none (transformers.js 4.3.1
        // keeps the best token of each step, i.e. decodes greedily too).
        const beams = set.seq2seq.decoding.numBeams;
        if (beams > 1) notices.push(`generation_config.json asks for num_beams ${beams}; nanomind decodes greedily (or samples), as transformers.js 4.3.1 does in effect`);
        taskPrompts = florence2TaskPrompts(await readJsonFile(preprocessor, 'E_PREPROCESSOR') as Record<string, unknown>, preprocessor);
      }
    }
    const prepareMedia = async (kind: MediaKind, item: MediaItem): Promise<PreparedMedia> => {
      if ('prepared' in item) return item.prepared;
      if ('tensor' in item) return { input: item.tensor };
      const source = 'bytes' in item ? item.bytes : item.file;
      if (kind === 'image') {
        if (imageFamily) return familyImage(imageFamily, vision!, source, opts.resampler, anyres);
        if (!imageConfig) throw fail('E_PREPROCESSOR', `${dir}: no preprocessor_config.json for images`, { hint: 'pass the tensor with --input pixel_values=FILE.npy' });
        const px = await preprocessImage(source, imageConfig, { resampler: opts.resampler });
        return { input: tensor('float32', px.data, px.dims) };
      }
      if (!audioConfig) throw fail('E_PREPROCESSOR', `${dir}: no preprocessor_config.json for audio`, { hint: 'pass the tensor with --input input_features=FILE.npy' });
      const mel = await audioFeatures(source, audioConfig);
      return { input: tensor('float32', mel.data, mel.dims) };
    };
    return {
      dir, set, bundle, notices, tokenizer, prompts, defaultSampling: await readDefaultSampling(dir), imageFamily, taskPrompts, anyres,
      prepareMedia,
      mediaInput: async (kind, item) => (await prepareMedia(kind, item)).input,
      close: () => set.close(),
    };
  } catch (e) {
    await set.close();
    throw e;
  }
}

/**
 * The backends each bundle brick may open on, best first, then its portable ONNX on the CPU: a GPU brick on
 * ort-webgpu; an NPU brick on rknn when its .rknn artifact is ready (with the plan's core mask); an NPU
 * decoder on rkllm when its .rkllm file is in the bundle (compile names where it goes; the user converts it
 * with rkllm-toolkit and drops it there, so it is looked for, not required).
 */
function bundlePlacement(b: Bundle): Record<string, BrickPlacement> {
  return Object.fromEntries(b.manifest.bricks.map((x) => [x.name, { ...backendsOf(b, x), ...cpusOf(b, x.name) }]));
}

/**
 * The CPUs a brick's threads are created on: plan.json's cpuList for it, cut to the CPUs this process
 * may use (Linux only; elsewhere, or with none left, the brick is not pinned).
 */
function cpusOf(b: Bundle, brick: string): { cpus?: readonly number[] } {
  const list = b.plan.affinity.find((a) => a.brick === brick)?.cpuList;
  if (!list || process.platform !== 'linux') return {};
  const r = cpusOnThisMachine(list);
  return r.cpus ? { cpus: r.cpus } : {};
}

/** The backends a bundle brick may open on, best first (see bundlePlacement's comment). */
function backendsOf(b: Bundle, x: Bundle['manifest']['bricks'][number]): BrickPlacement {
  const rknn = x.backend === 'rknn' ? x.artifacts.find((a) => a.kind === 'rknn' && a.status === 'ready' && a.path) : undefined;
  if (rknn) return { backends: ['rknn', 'ort-cpu'], artifact: rknn.path, coreMask: b.plan.affinity.find((a) => a.brick === x.name)?.coreMask };
  const rkllm = x.backend === 'rkllm' ? rkllmFile(b, x) : undefined;
  // max_context_len as convert_rkllm_<brick>.py converted it (the plan's workload.maxContext).
  if (rkllm) return { backends: ['rkllm', 'ort-cpu'], artifact: rkllm, maxContext: b.plan.workload.maxContext };
  // `compile --engine auto|native` packed this decoder for the native kernels: they go first, its ONNX is the fallback.
  if (x.kind === 'decoder' && x.backend === 'ort-cpu' && b.manifest.files.some((f) => f.path === nativeConfigFile(x.name)))
    return { backends: ['native', 'ort-cpu'] };
  return { backends: x.backend === 'ort-webgpu' ? ['ort-webgpu', 'ort-cpu'] : ['ort-cpu'] };
}

/** The bundle's .rkllm file for a brick, when it is there. */
function rkllmFile(b: Bundle, x: BundleBrick): string | undefined {
  const a = x.artifacts.find((y) => y.kind === 'rkllm' && y.path);
  return a?.path && existsSync(join(b.dir, a.path)) ? a.path : undefined;
}

/** One line per bundle brick that does not run on the backend it is placed on. */
function placementNotices(bundle: Bundle | undefined, set: BrickSet): string[] {
  const native = Object.entries(set.placed).flatMap(([name, p]) => p.skipped.filter((s) => s.id === 'native')
    .map((s) => `brick '${name}': the native kernels do not run here (${s.reason}); using its ONNX on ${p.backend}`));
  // A packed decoder on the native kernels is where the bundle meant it to run (on the CPU).
  return [...native, ...(bundle?.manifest.bricks ?? []).filter((b) => set.placed[b.name]?.backend !== b.backend && set.placed[b.name]?.backend !== 'native').map((b) => {
    const p = set.placed[b.name]!;
    const why = p.skipped.find((s) => s.id === b.backend)?.reason
      ?? (b.backend === 'rknn' ? 'its .rknn file is not converted yet' : b.backend === 'rkllm' ? `its .rkllm file is not converted yet: ${b.artifacts.find((a) => a.kind === 'rkllm')?.path ?? 'no path'} is absent` : undefined);
    return `brick '${b.name}' is placed on ${b.accelerator} (${b.backend}), which this machine cannot run${why ? ` (${why})` : ''}; using its portable ONNX on ${p.backend}`;
  })];
}

/** Input names a processor and an export may spell differently (transformers.js' Qwen2-VL encoder: grid_thw). */
const ALIASES: Readonly<Record<string, string>> = { grid_thw: 'image_grid_thw' };

/** One image through its family's processor, as feeds for the encoder chain's first brick. */
async function familyImage(p: FamilyProcessor, enc: EncoderRole, source: string | Uint8Array, resampler?: Resampler, anyres?: AnyresRuntime): Promise<PreparedMedia> {
  const batch = await p.preprocess([source], { resampler });
  if (anyres) {
    const px = batch.tensors.pixel_values as TensorLike, sizes = batch.tensors.image_sizes as TensorLike;
    const want = batch.tokensPerImage[0]!;
    return {
      input: { [enc.input.name]: anyres.pixelBatch(px) }, expansion: batch.expandPrompt(p.placeholder), tensors: batch.tensors as Readonly<Record<string, TensorLike>>,
      pack: async (r) => {
        const rows = await anyres.pack(r, sizes);
        // The processor's token count (LlavaOnevisionProcessor._get_number_of_features) and the packing are
        // computed apart; a disagreement would shift every later prompt token.
        if (rows.length !== want * r.dims.at(-1)!)
          throw fail('E_MERGE_COUNT', `LLaVA-OneVision: ${rows.length / r.dims.at(-1)!} packed feature rows for ${want} <image> tokens`, { notes: [`image_sizes ${Array.from(sizes.data as BigInt64Array).join('x')}`] });
        return rows;
      },
    };
  }
  const feeds: Record<string, TensorLike> = {};
  const first = enc.chain[0]!;
  for (const i of first.inputs) {
    const t = batch.tensors[i.name] ?? batch.tensors[ALIASES[i.name] ?? ''];
    if (!t) throw fail('E_PREPROCESSOR', `the ${p.family} processor gives no '${i.name}' for encoder '${first.name}'`,
      { notes: [`processor outputs: ${Object.keys(batch.tensors).join(', ')}`] });
    feeds[i.name] = t as TensorLike;
  }
  return { input: feeds, expansion: batch.expandPrompt(p.placeholder), tensors: batch.tensors as Readonly<Record<string, TensorLike>> };
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
  /** mRoPE decoders (Qwen2-VL): the family's position rows for `inputIds` (see GenerateRequest). */
  readonly mropePositions?: BigInt64Array;
  /** The new user message, for a conversation history. */
  readonly message: ChatMessage;
}

/** What a history message remembers of its media: feature rows per item, and family expansions. */
interface MediaRecord {
  readonly rows: Record<MediaKind, number[]>;
  readonly images?: readonly { readonly expansion: string; readonly tensors?: Readonly<Record<string, TensorLike>> }[];
}

/**
 * Encodes the turn's media (feature rows decide how many placeholder tokens each item expands to; a
 * family processor writes each image's expansion text instead), then renders the conversation with the
 * chat template and expands the placeholders.
 */
export async function prepareTurn(m: RuntimeModel, turn: Turn, history: readonly ChatMessage[] = [],
  encoded: Readonly<Record<number, Float32Array>> = {}): Promise<PreparedTurn> {
  if (!m.prompts || !m.tokenizer)
    throw fail('E_TOKENIZER', `${m.dir}: no tokenizer.json / chat template, so text prompts cannot be encoded`, { hint: 'pass token ids with --input-ids' });
  const features: Record<number, Float32Array[]> = {};
  const record: Required<MediaRecord> = { rows: { image: [], audio: [] }, images: [] };
  let encodeMs = 0;
  for (const kind of ['image', 'audio'] as const) {
    const items = (kind === 'image' ? turn.images : turn.audio) ?? [];
    if (!items.length) continue;
    const enc = m.set.encoder(kind === 'image' ? 'vision' : 'audio');
    for (const item of items) {
      const media = await m.prepareMedia(kind, item);
      const r: EncodeResult = await m.set.encode(enc.placeholderTokenId, media.input);
      encodeMs += r.ms;
      const rows = await mediaRows(media, r);
      (features[enc.placeholderTokenId] ??= []).push(rows);
      record.rows[kind].push(rows === r.features ? r.rows : rows.length / r.dims.at(-1)!);
      if (kind === 'image' && media.expansion !== undefined) (record.images as MediaRecord['images'] & unknown[]).push({ expansion: media.expansion, tensors: media.tensors });
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
  const previous = mediaOf(history);
  const family = m.imageFamily;
  const images = [...previous.images, ...record.images];
  const encodedPrompt = m.prompts.encode(messages, {
    addGenerationPrompt: true,
    // A family's expansion text already holds every placeholder token: each then stands for one row.
    expandText: family ? (text) => expandEach(text, family.placeholder, images.map((i) => i.expansion)) : undefined,
    counts: family ? { image: 1, audio: [...previous.rows.audio, ...record.rows.audio] }
      : { image: [...previous.rows.image, ...record.rows.image], audio: [...previous.rows.audio, ...record.rows.audio] },
  });
  const merged: Record<number, Float32Array> = { ...encoded };
  for (const [id, list] of Object.entries(features)) merged[Number(id)] = concatRows([...(encoded[Number(id)] ? [encoded[Number(id)]] : []), ...list]);
  let mropePositions: BigInt64Array | undefined;
  if (m.set.decoder.inputs.positions === 'mrope' && family?.ropeIndex && images.length)
    mropePositions = family.ropeIndex(encodedPrompt.ids, images.map((i) => i.tensors ?? {}) as Readonly<Record<string, never>>[]).positions;
  return { inputIds: encodedPrompt.ids, features: merged, encodeMs, mropePositions, message: { ...message, media: record } as ChatMessage };
}

/** Replaces the i-th `placeholder` in `text` with `expansions[i]`; the counts must agree. */
function expandEach(text: string, placeholder: string, expansions: readonly string[]): string {
  const parts = text.split(placeholder);
  if (parts.length - 1 !== expansions.length)
    throw fail('E_PROMPT_IMAGES', `the prompt has ${parts.length - 1} ${placeholder} placeholder(s) for ${expansions.length} image(s)`,
      { hint: 'the chat template writes one placeholder per image content part' });
  return parts.reduce((out, p, i) => out + expansions[i - 1] + p);
}

function mediaOf(history: readonly ChatMessage[]): Required<MediaRecord> {
  const out = { rows: { image: [] as number[], audio: [] as number[] }, images: [] as NonNullable<MediaRecord['images']>[number][] };
  for (const h of history) {
    const media = (h as ChatMessage & { media?: MediaRecord }).media;
    if (!media) continue;
    out.rows.image.push(...media.rows.image);
    out.rows.audio.push(...media.rows.audio);
    out.images.push(...(media.images ?? []));
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
