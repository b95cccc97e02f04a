/**
 * Which files of a Hugging Face repo `pull` fetches: for an onnx-community / transformers.js repo only
 * the chosen dtype variant of each brick file (`onnx/decoder_model_merged_q4f16.onnx` + its
 * `.onnx_data[_N]`), falling back to the plain (fp32) file where the variant lacks one (the same rule
 * `partition --dtype` applies), plus the config / tokenizer / processor / chat-template files at the
 * repo root. `--include GLOB` adds anything else.
 */
import { fail } from '../errors.js';
import { DTYPE_SUFFIXES, SPLIT_FILES } from '../formats/names.js';

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

export function selectFiles(listing: readonly RepoFile[], o: { dtype?: string; include?: readonly string[] } = {}): Selection {
  const dtype = o.dtype ?? 'fp32';
  if (!(PULL_DTYPES as readonly string[]).includes(dtype))
    throw fail('E_USAGE', `--dtype '${dtype}': expected one of ${PULL_DTYPES.join(', ')}`);
  const suffix = dtype === 'fp32' ? '' : dtype;
  const byPath = new Map(listing.map((f) => [f.path, f]));
  const notes: string[] = [];
  const chosen = new Map<string, RepoFile>();

  // Brick graphs, grouped by folder + stem so `onnx/` and a root-level model are handled alike.
  const groups = new Map<string, Map<string, RepoFile>>();
  const skipped: string[] = [];
  for (const f of listing) {
    const p = parseOnnxName(f.path);
    if (!p) continue;
    if (!(p.stem in SPLIT_FILES)) { skipped.push(f.path); continue; }
    const key = p.folder ? `${p.folder}/${p.stem}` : p.stem;
    const g = groups.get(key) ?? new Map<string, RepoFile>();
    g.set(p.suffix, f);
    groups.set(key, g);
  }
  // decoder_model is the un-merged export; decoder_model_merged replaces it when both exist.
  for (const key of [...groups.keys()])
    if (key.endsWith('decoder_model') && groups.has(`${key}_merged`)) { groups.delete(key); skipped.push(`${key}*.onnx (decoder_model_merged is used)`); }

  const available = new Set([...groups.values()].flatMap((g) => [...g.keys()]));
  if (groups.size && !available.has(suffix))
    throw fail('E_PULL_DTYPE', `no '${dtype}' variant in this repo (available: ${[...available].map((s) => s || 'fp32').join(', ')})`,
      { hint: 'pick one with --dtype' });
  const variants: Record<string, string> = {};
  for (const [key, g] of groups) {
    const f = g.get(suffix) ?? g.get('');
    if (!f) { notes.push(`${key}: no '${dtype}' or fp32 file; skipped (available: ${[...g.keys()].map((s) => s || 'fp32').join(', ')})`); continue; }
    variants[key] = g.has(suffix) ? dtype : 'fp32';
    if (!g.has(suffix)) notes.push(`${key}: no '${dtype}' variant, using the fp32 file`);
    chosen.set(f.path, f);
    const data = new RegExp(`^${f.path.replace(/[.+^${}()|[\]\\]/g, '\\$&')}_data(?:_\\d+)?$`);
    for (const d of listing) if (data.test(d.path)) chosen.set(d.path, d);
  }
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
