/**
 * Which files of a Hugging Face repo `pull` fetches: for an onnx-community / transformers.js repo only
 * the chosen dtype variant of each graph (`onnx/decoder_model_merged_q4f16.onnx` + every
 * `.onnx_data[_N]` part), plus the config / tokenizer / processor / chat-template files at the repo
 * root. `--include GLOB` adds anything else.
 *
 * Graphs fetched: the brick files (SPLIT_FILES) and `encoder_model`, the encoder session of
 * encoder-decoder exports (Whisper's audio encoder, Florence-2's text encoder) that transformers.js
 * loads beside `decoder_model_merged`. `decoder_model_merged` replaces `decoder_model` and
 * `decoder_with_past_model` (it holds both branches); those two are fetched only where no merged
 * decoder exists (`decoder_model`) or never (`decoder_with_past_model`, which nothing here runs).
 *
 * Fallback when a graph lacks the asked variant (DTYPE_FALLBACK in formats/names.ts, which
 * `partition --dtype` follows too): transformers.js itself has none — a dtype string applies to
 * every session and a missing file fails the load; `get_available_dtypes`
 * counts a dtype only when every session file exists. Its answer is a per-session dtype map, and
 * `pull` writes down the map a user would give: keep the activation precision where the repo allows
 * it (q4f16 → fp16 → fp32, fp16 → fp32) and take the full-precision file for the fp32-activation
 * variants (q4, bnb4, int8, uint8, quantized → fp32), the one file that is always a valid stand-in.
 * A dtype no graph ships, or a graph with neither the variant nor a fallback, is E_PULL_DTYPE.
 */
import { fail } from '../errors.js';
import { DTYPE_FALLBACK, DTYPE_SUFFIXES, SPLIT_FILES, type DtypeSuffix } from '../formats/names.js';

/** One file of the repo listing (the hub's tree API, kept as `pull` caches it for offline use). */
export interface RepoFile {
  readonly path: string;
  readonly size: number;
  /** Git blob id (sha1 of `blob <size>\0<content>`), for non-LFS files. */
  readonly oid: string;
  /** LFS pointer: the sha256 of the content. */
  readonly lfs?: { readonly oid: string; readonly size: number };
}

/** `fp32` is the plain file (no suffix); the rest are onnx-community suffixes. */
export const PULL_DTYPES = ['fp32', ...DTYPE_SUFFIXES.filter((s) => s !== '')] as const;
export type PullDtype = (typeof PULL_DTYPES)[number];

/** transformers.js calls the `_quantized` files `q8`; accept its name too. */
const DTYPE_ALIASES: Readonly<Record<string, PullDtype>> = { q8: 'quantized' };


/** Graph stems `pull` fetches (see the header for encoder_model). */
const PULL_STEMS: ReadonlySet<string> = new Set([...Object.keys(SPLIT_FILES), 'encoder_model']);
/** Exports that `decoder_model_merged` replaces when both are in the repo. */
const MERGED_REPLACES = ['decoder_model', 'decoder_with_past_model'];

/** Small files a model folder needs beside the graphs (only at the repo root). */
export const SIDE_FILES: readonly string[] = [
  'config.json', 'generation_config.json', 'preprocessor_config.json', 'processor_config.json',
  'video_preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'added_tokens.json', 'vocab.json', 'merges.txt', 'tokenizer.model', 'chat_template.jinja', 'chat_template.json',
];

export interface Selection {
  readonly files: readonly RepoFile[];
  /** The dtype each brick file resolved to (`decoder_model_merged` → `q4f16`, `embed_tokens` → `fp32`). */
  readonly variants: Readonly<Record<string, string>>;
  readonly notes: readonly string[];
}

const ONNX = /^(?:(.*)\/)?([^/]+)\.onnx$/;

/** Splits `onnx/decoder_model_merged_q4f16.onnx` into folder, stem and suffix (`''` = fp32). */
export function parseOnnxName(path: string): { folder: string; stem: string; suffix: string } | undefined {
  const m = ONNX.exec(path);
  if (!m) return undefined;
  const folder = m[1] ?? '';
  for (const s of DTYPE_SUFFIXES) {
    if (s && m[2].endsWith(`_${s}`)) return { folder, stem: m[2].slice(0, -s.length - 1), suffix: s };
  }
  return { folder, stem: m[2], suffix: '' };
}

/** `**` matches across folders, `*` and `?` within one path segment. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      re += glob[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += glob[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

const dtypeOf = (suffix: string): PullDtype => (suffix || 'fp32') as PullDtype;
/** The variants tried for `dtype`, in order: itself, then its fallbacks. */
const tried = (dtype: PullDtype): PullDtype[] => [dtype, ...DTYPE_FALLBACK[(dtype === 'fp32' ? '' : dtype) as DtypeSuffix].map(dtypeOf)];

export function selectFiles(listing: readonly RepoFile[], o: { dtype?: string; include?: readonly string[] } = {}): Selection {
  const asked = o.dtype ?? 'fp32';
  const dtype = DTYPE_ALIASES[asked] ?? asked;
  if (!(PULL_DTYPES as readonly string[]).includes(dtype))
    throw fail('E_USAGE', `--dtype '${asked}': expected one of ${PULL_DTYPES.join(', ')} (or q8 = quantized)`);
  const want = dtype as PullDtype;
  const byPath = new Map(listing.map((f) => [f.path, f]));
  const notes: string[] = [];
  const chosen = new Map<string, RepoFile>();

  // Graphs, grouped by folder + stem so `onnx/` and a root-level model are handled alike.
  const groups = new Map<string, Map<PullDtype, RepoFile>>();
  const skipped: string[] = [];
  for (const f of listing) {
    const p = parseOnnxName(f.path);
    if (!p) continue;
    if (!PULL_STEMS.has(p.stem)) { skipped.push(f.path); continue; }
    const key = p.folder ? `${p.folder}/${p.stem}` : p.stem;
    const g = groups.get(key) ?? new Map<PullDtype, RepoFile>();
    g.set(dtypeOf(p.suffix), f);
    groups.set(key, g);
  }
  for (const key of [...groups.keys()]) {
    const folder = key.includes('/') ? key.slice(0, key.lastIndexOf('/') + 1) : '';
    if (MERGED_REPLACES.some((stem) => key === `${folder}${stem}`) && groups.has(`${folder}decoder_model_merged`)) {
      groups.delete(key);
      skipped.push(`${key}*.onnx (decoder_model_merged is used)`);
    }
  }

  const ships = PULL_DTYPES.filter((d) => [...groups.values()].some((g) => g.has(d)));
  const perGraph = [...groups].map(([key, g]) => `${key}: ${PULL_DTYPES.filter((d) => g.has(d)).join(', ')}`);
  if (groups.size && !ships.includes(want))
    throw fail('E_PULL_DTYPE', `no '${want}' variant in this repo (it ships: ${ships.join(', ')})`,
      { hint: `pick one with --dtype ${ships.join(' | ')}`, notes: perGraph });
  const variants: Record<string, string> = {};
  const missing: string[] = [];
  for (const [key, g] of groups) {
    const got = tried(want).find((d) => g.has(d));
    if (!got) { missing.push(key); continue; }
    const f = g.get(got)!;
    variants[key] = got;
    if (got !== want) notes.push(`${key}: no '${want}' variant, using the ${got} file`);
    chosen.set(f.path, f);
    // Every external-data part: `x.onnx_data`, `x.onnx_data_1`, … (transformers.js names chunk i > 0 `_data_<i>`).
    const data = new RegExp(`^${f.path.replace(/[.+^${}()|[\]\\]/g, '\\$&')}_data(?:_\\d+)?$`);
    for (const d of listing) if (data.test(d.path)) chosen.set(d.path, d);
  }
  if (missing.length)
    throw fail('E_PULL_DTYPE', `${missing.join(', ')}: no '${want}' file and none of its fallbacks (${tried(want).slice(1).join(', ') || 'none'})`,
      { hint: `pick a dtype every graph has, or fetch that graph with --include; the repo ships: ${ships.join(', ')}`, notes: perGraph });
  if (skipped.length) notes.push(`not fetched (use --include to add): ${skipped.join(', ')}`);

  for (const name of SIDE_FILES) { const f = byPath.get(name); if (f) chosen.set(f.path, f); }
  for (const glob of o.include ?? []) {
    const re = globToRegExp(glob);
    const hits = listing.filter((f) => re.test(f.path));
    if (!hits.length) notes.push(`--include '${glob}' matched no file`);
    for (const f of hits) chosen.set(f.path, f);
  }
  if (!groups.size && !(o.include ?? []).length)
    throw fail('E_PULL_NO_ONNX', 'the repo holds no ONNX model in the onnx-community layout (onnx/*.onnx)',
      { hint: 'pull an onnx-community/… repo, or fetch files explicitly with --include GLOB' });
  return { files: [...chosen.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)), variants, notes };
}
