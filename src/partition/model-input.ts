/**
 * Model intake: which layout a path is, decided in one place for `partition` and `inspect` (and so for
 * `run`/`chat`/`eval`, which partition a model folder first), so that they always agree.
 *
 * Layouts nanomind knows (KNOWN_LAYOUTS): an onnx-community split folder, a text-only
 * `onnx/model[_suffix].onnx` folder, a folder holding one monolithic graph, a single .onnx file.
 * Encoder-decoder exports (Whisper; Florence-2 with its vision_encoder + embed_tokens) are adopted by
 * ./encoder-decoder.ts; one it cannot adopt is E_PARTITION_ENCODER_DECODER. Anything else is refused with
 * E_PARTITION_LAYOUT naming the layouts. No .onnx file in the folder is dropped silently: other
 * dtype variants of the files used are listed in `notices`; any other file is an error.
 */
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { readJsonFile } from '../formats/json-file.js';
import { DTYPE_FALLBACK, SPLIT_FILES, TENSOR, splitOnnxName, type DtypeSuffix } from '../formats/names.js';
import { loadModel } from '../onnx/model-io.js';
import { realInside } from '../util/files.js';
import { interfaceOf } from './brick-files.js';
import { isEncoderDecoderLayout, type SplitFile, type SplitLayout } from './split-layout.js';
import { findEncoderDecoderLayout, type EncoderDecoderLayout } from './encoder-decoder.js';

export const KNOWN_LAYOUTS: readonly string[] = [
  'onnx-community split folder: onnx/{vision_encoder,audio_encoder,embed_tokens,decoder_model_merged}[_suffix].onnx',
  'text-only folder: onnx/model[_suffix].onnx taking input_ids',
  'encoder-decoder folder (Whisper): onnx/encoder_model[_suffix].onnx + onnx/decoder_model_merged[_suffix].onnx',
  'vision encoder-decoder folder (Florence-2): onnx/{vision_encoder,embed_tokens,encoder_model,decoder_model_merged}[_suffix].onnx',
  'a folder (or its onnx/) holding exactly one monolithic .onnx graph',
  'a single .onnx file',
];

export type ModelLayout =
  /** Files that already are bricks (a text-only decoder is a one-file split layout). */
  | { readonly form: 'split'; readonly root: string; readonly split: SplitLayout; readonly notices: readonly string[] }
  /** One graph that brick detection cuts. */
  | { readonly form: 'monolithic'; readonly root: string; readonly file: string; readonly notices: readonly string[] }
  /** An encoder and a decoder joined by cross-attention (Whisper; Florence-2 with vision + embed), adopted as they are. */
  | { readonly form: 'encoder-decoder'; readonly root: string; readonly pair: EncoderDecoderLayout; readonly notices: readonly string[] };

/** Split-layout stems in preference order (`decoder_model_merged` before the un-merged `decoder_model`); `model` is text-only. */
const BRICK_STEMS = Object.keys(SPLIT_FILES).filter((s) => s !== 'model');
/** Other exports of a brick the layout uses; listed as unused, not refused. */
const ALTERNATES: Readonly<Record<string, string>> = { decoder_with_past_model: 'decoder', decoder_model: 'decoder' };
const isEncoderInput = (name: string): boolean => /pixel_values|input_features/.test(name);

const layoutError = (dir: string, what: string, files: readonly string[] = []) =>
  fail('E_PARTITION_LAYOUT', `${dir}: ${what}`, {
    file: dir,
    hint: 'pass a folder in one of the layouts listed, or a .onnx file',
    notes: [...KNOWN_LAYOUTS.map((l) => `layout: ${l}`), ...files.map((f) => `found: ${f}`)],
  });

const onnxNames = async (dir: string): Promise<string[]> =>
  (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.onnx')).sort();

/** The layout of `path`; for a folder, every model file it uses must really live inside it (no link out). */
export async function resolveModelLayout(path: string, dtype?: string): Promise<ModelLayout> {
  const layout = await findLayout(path, dtype);
  if ((await stat(resolve(path))).isDirectory()) {
    const files = layout.form === 'split' ? layout.split.files.map((f) => f.file)
      : layout.form === 'encoder-decoder' ? [layout.pair.encoder, layout.pair.decoder] : [layout.file];
    for (const f of files) await realInside(layout.root, f, 'model file');
  }
  return layout;
}

async function findLayout(path: string, dtype?: string): Promise<ModelLayout> {
  const abs = resolve(path);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw fail('E_FILE_NOT_FOUND', `${path}: no such file or directory`, { file: abs });
  if (!st.isDirectory())
    return { form: 'monolithic', root: dirname(abs), file: abs, notices: dtype ? [`--dtype ${dtype} ignored: ${path} is one graph`] : [] };
  if (await isEncoderDecoderLayout(abs)) {
    const pair = await findEncoderDecoderLayout(abs, dtype);
    if (pair) return { form: 'encoder-decoder', root: abs, pair, notices: pair.unused.length ? [`not used: ${pair.unused.join(', ')} (other variants or exports of the files used; pick a variant with --dtype)`] : [] };
    throw fail('E_PARTITION_ENCODER_DECODER', `${path}: an encoder-decoder export without an encoder_model + decoder_model_merged pair`, {
      file: abs, hint: 'nanomind adopts onnx/encoder_model*.onnx with onnx/decoder_model_merged*.onnx (pull fetches both)',
      notes: [...await onnxNames(join(abs, 'onnx')), ...await onnxNames(abs)],
    });
  }
  const inOnnx = await onnxNames(join(abs, 'onnx'));
  const top = await onnxNames(abs);
  const d = inOnnx.length ? join(abs, 'onnx') : abs;
  const names = inOnnx.length ? inOnnx : top;
  const notices = inOnnx.length && top.length ? [`not used: ${top.join(', ')} (the model in onnx/ is)`] : [];
  if (!names.length) throw layoutError(path, 'holds no .onnx file (nor does onnx/)');
  const parsed = names.map((name) => ({ name, ...splitOnnxName(name)! }));

  if (parsed.some((p) => BRICK_STEMS.includes(p.stem))) {
    const r = splitFiles(d, parsed, dtype);
    return { form: 'split', root: abs, split: r.layout, notices: [...notices, ...r.notices] };
  }
  if (parsed.every((p) => p.stem === 'model')) {
    const suffix = dtype ?? '';
    const chosen = parsed.find((p) => p.suffix === suffix);
    if (!chosen)
      throw fail('E_PARTITION_DTYPE', `${d}: no '${suffix || 'fp32'}' variant (available: ${parsed.map((p) => p.suffix || "'' (fp32)").join(', ')})`, { hint: 'pick one with --dtype' });
    const file = join(d, chosen.name);
    const others = parsed.filter((p) => p !== chosen).map((p) => p.name);
    if (others.length) notices.push(`not used: ${others.join(', ')} (other variants; pick one with --dtype)`);
    const { inputs } = interfaceOf((await loadModel(file, { checkExternal: false })).model);
    const textOnly = inputs.some((i) => i.name === TENSOR.inputIds) && !inputs.some((i) => isEncoderInput(i.name));
    if (textOnly) return { form: 'split', root: abs, split: { dir: d, suffix, files: [{ stem: 'model', kind: 'decoder', file }] }, notices };
    return { form: 'monolithic', root: abs, file, notices };
  }
  if (names.length === 1)
    return { form: 'monolithic', root: abs, file: join(d, names[0]), notices: dtype ? [...notices, `--dtype ${dtype} ignored: ${names[0]} is one graph`] : notices };
  throw layoutError(path, `${names.length} .onnx files that form no layout nanomind knows`, names);
}

/** The split-layout files of variant `dtype` (parts the variant lacks fall back as DTYPE_FALLBACK says). */
function splitFiles(d: string, parsed: readonly { name: string; stem: string; suffix: string }[], dtype: string | undefined): { layout: SplitLayout; notices: string[] } {
  const variants = new Map<string, SplitFile[]>();
  for (const stem of BRICK_STEMS)
    for (const p of parsed.filter((x) => x.stem === stem)) {
      const list = variants.get(p.suffix) ?? [];
      if (!list.some((f) => f.kind === SPLIT_FILES[stem])) list.push({ stem, kind: SPLIT_FILES[stem], file: join(d, p.name) });
      variants.set(p.suffix, list);
    }
  const suffix = dtype ?? '';
  if (!variants.has(suffix))
    throw fail('E_PARTITION_DTYPE', `${d}: no '${suffix || 'fp32'}' variant (available: ${[...variants.keys()].map((s) => s || "'' (fp32)").join(', ')})`,
      { hint: 'pick one with --dtype' });
  // Files a variant lacks (e.g. an fp32 embed_tokens beside q4 decoders) fall back by DTYPE_FALLBACK, as `pull` fetched them.
  const chosen = [...variants.get(suffix)!];
  for (const fb of DTYPE_FALLBACK[suffix as DtypeSuffix] ?? [''])
    for (const f of variants.get(fb) ?? []) if (!chosen.some((c) => c.kind === f.kind)) chosen.push(f);
  if (!chosen.some((f) => f.kind === 'decoder'))
    throw layoutError(d, 'split files without a decoder (decoder_model_merged*.onnx)', parsed.map((p) => p.name));
  const used = new Set(chosen.map((f) => f.file));
  const unused = parsed.filter((p) => !used.has(join(d, p.name)));
  // Another variant (or export) of a part the layout has is an alternative; anything else would be lost.
  const kindOf = (stem: string) => ALTERNATES[stem] ?? (BRICK_STEMS.includes(stem) ? SPLIT_FILES[stem] : undefined);
  const lost = unused.filter((p) => { const k = kindOf(p.stem); return !k || !chosen.some((f) => f.kind === k); });
  if (lost.length)
    throw layoutError(d, `${lost.map((p) => p.name).join(', ')} would be dropped: no part of the split layout nanomind uses`, parsed.map((p) => p.name));
  const notices = unused.length ? [`not used: ${unused.map((p) => p.name).join(', ')} (other variants or exports of the bricks used; pick a variant with --dtype)`] : [];
  return { layout: { dir: d, suffix, files: chosen }, notices };
}

export interface ModelConfig {
  readonly id?: string;
  readonly vocabSize?: number;
  readonly tokenIds: { image?: number; audio?: number };
  /** config.json model_type (families whose bricks need more than the ONNX files: llava_onevision's image_newline). */
  readonly modelType?: string;
}

/** Folders whose config.json describes a model at `root`: the folder itself, then its parent. */
export const configDirs = (root: string): string[] => [root, dirname(root)];

/** The first config.json of `dirs`: model id, vocabulary size and placeholder token ids. */
export async function readModelConfig(dirs: readonly string[]): Promise<ModelConfig> {
  for (const d of dirs) {
    const file = join(d, 'config.json');
    if (!(await stat(file).catch(() => undefined))) continue;
    const c = await readJsonFile(file, 'E_CONFIG_INVALID') as Record<string, any>;
    const problems = configProblems(c);
    if (problems.length) throw fail('E_CONFIG_INVALID', `${file}: ${problems[0]}`, { file, notes: problems, hint: 'the file is corrupt or not a Hugging Face config.json' });
    const num = (...vals: unknown[]) => vals.find((v) => typeof v === 'number') as number | undefined;
    return {
      id: typeof c._name_or_path === 'string' && c._name_or_path ? c._name_or_path : undefined,
      vocabSize: num(c.text_config?.vocab_size, c.vocab_size),
      tokenIds: { image: num(c.image_token_index, c.image_token_id), audio: num(c.audio_token_index, c.audio_token_id) },
      modelType: typeof c.model_type === 'string' ? c.model_type : undefined,
    };
  }
  return { tokenIds: {} };
}

/** Keys nanomind reads from config.json (here and in the runtime's processors) and the type each must have. */
const CONFIG_INTS = ['vocab_size', 'image_token_index', 'image_token_id', 'audio_token_index', 'audio_token_id', 'max_position_embeddings', 'num_hidden_layers', 'hidden_size'];
const CONFIG_STRINGS = ['model_type', '_name_or_path'];

/** Every wrongly typed key of a config.json (and of its text_config / vision_config). */
function configProblems(c: unknown): string[] {
  if (!c || typeof c !== 'object' || Array.isArray(c)) return ['expected a JSON object'];
  const out: string[] = [];
  const check = (o: Record<string, unknown>, at: string) => {
    for (const k of CONFIG_INTS)
      if (o[k] !== undefined && o[k] !== null && !(Number.isSafeInteger(o[k]) && (o[k] as number) >= 0)) out.push(`${at}${k}: expected a non-negative integer, got ${JSON.stringify(o[k])?.slice(0, 40)}`);
    for (const k of CONFIG_STRINGS)
      if (o[k] !== undefined && o[k] !== null && typeof o[k] !== 'string') out.push(`${at}${k}: expected a string, got ${JSON.stringify(o[k])?.slice(0, 40)}`);
  };
  const cfg = c as Record<string, unknown>;
  check(cfg, '');
  for (const sub of ['text_config', 'vision_config', 'audio_config']) {
    const v = cfg[sub];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'object' || Array.isArray(v)) out.push(`${sub}: expected an object`);
    else check(v as Record<string, unknown>, `${sub}.`);
  }
  return out;
}
