/**
 * What the compiler needs to know about each brick of a brick set, read once: its weight format
 * (recorded by `quantize`, or detected from its ops), op types and opset, which dims stay dynamic at
 * batch 1, FLOPs, the KV cache a decoder keeps per token, and the token count and width of the
 * embeddings an encoder hands to the decoder.
 */
import { join } from 'node:path';
import { readBricksManifest, type BrickEntry, type BricksManifest, type TensorSpec } from '../formats/bricks.js';
import { readJsonFile } from '../formats/json-file.js';
import { fail } from '../errors.js';
import { dtypeInfo, dtypeFromName } from '../onnx/dtype.js';
import { loadModel } from '../onnx/model-io.js';
import type { GraphProto } from 'onnx-buf';
import { Graph } from '../onnx/graph.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { estimateFlops } from '../onnx/stats.js';
import { encoderRows } from './encoder-rows.js';
import { staticEncoderInput } from '../formats/encoder-input.js';
import { detectFormat, isWeightFormat, type WeightFormat } from './formats.js';

export interface KvInfo {
  readonly layers: number;
  /** Elements per token summed over every past key and value input (heads × head_dim × 2 × layers). */
  readonly elementsPerToken: number;
  readonly dtype: string;
}

export interface BrickInfo {
  readonly entry: BrickEntry;
  readonly format: WeightFormat;
  readonly formatFrom: 'manifest' | 'detected';
  readonly ops: ReadonlySet<string>;
  readonly opset: number;
  /** Symbolic dims other than batch, by tensor: these keep a brick off static-shape accelerators. */
  readonly dynamicDims: readonly string[];
  readonly params: number;
  /** Bytes of the weights as stored (in `format`). */
  readonly weightBytes: number;
  /**
   * FLOPs per call of an encoder (one image / clip at the size its configs fix, attention included) or
   * per token (embed, decoder: weights only; the cost model adds attention over the context).
   */
  readonly flops: number;
  /** Where `flops` came from: bricks.json, or shape inference at the config's input size. */
  readonly flopsFrom?: string;
  /** An encoder's interface with dynamic dims made static from its configs (what an NPU file is built with). */
  readonly staticShapes?: Readonly<Record<string, readonly number[]>>;
  /** Which config values fixed them. */
  readonly staticFrom?: string;
  readonly perToken: boolean;
  /** Width of the embeddings the brick produces or consumes (`hidden`). */
  readonly hidden?: number;
  /** Rows an encoder emits per image / clip (image or audio tokens). */
  readonly tokens?: number;
  /** Where `tokens` came from (output shape, shape inference, a config key). */
  readonly tokensFrom?: string;
  readonly kv?: KvInfo;
  readonly vocab?: number;
}

export interface BrickSetInfo {
  readonly dir: string;
  readonly manifest: BricksManifest;
  readonly bricks: readonly BrickInfo[];
  /** Context length the decoder's KV cache is sized for. */
  readonly maxContext: number;
  readonly config: Record<string, unknown> | undefined;
}

const isBatch = (d: string) => /batch/i.test(d);
export const bytesOf = (dtype: string): number => { try { return Math.max(1, dtypeInfo(dtypeFromName(dtype)).bits / 8); } catch { return 4; } };

export async function analyzeBrickSet(dir: string, opts: { maxContext?: number } = {}): Promise<BrickSetInfo> {
  const manifest = await readBricksManifest(dir);
  const cfgFile = manifest.files.find((f) => f.path === 'config.json');
  const config = cfgFile ? await readJsonFile(join(dir, cfgFile.path), 'E_CONFIG_INVALID') as Record<string, any> : undefined;
  const preFile = manifest.files.find((f) => f.path === 'preprocessor_config.json');
  const preprocessor = preFile ? await readJsonFile(join(dir, preFile.path), 'E_CONFIG_INVALID') as Record<string, any> : undefined;
  const maxPos = config?.text_config?.max_position_embeddings ?? config?.max_position_embeddings;
  // A KV cache longer than the positions the model was trained on would produce garbage past them.
  if (opts.maxContext !== undefined && typeof maxPos === 'number' && opts.maxContext > maxPos)
    throw fail('E_USAGE', `--max-context ${opts.maxContext}: the model has ${maxPos} positions (max_position_embeddings in config.json)`,
      { hint: `use --max-context ${maxPos} or less` });
  const maxContext = opts.maxContext ?? (typeof maxPos === 'number' ? Math.min(maxPos, 4096) : 2048);
  const bricks: BrickInfo[] = [];
  for (const entry of manifest.bricks) bricks.push(await analyzeBrick(dir, entry, { config, preprocessor }));
  return { dir, manifest, bricks, maxContext, config };
}

async function analyzeBrick(dir: string, entry: BrickEntry, configs: Parameters<typeof encoderRows>[2]): Promise<BrickInfo> {
  const loaded = await loadModel(join(dir, entry.file), { checkExternal: false });
  const g = loaded.model.graph!;
  const declared = normalizeFormat((entry as BrickEntry & { format?: unknown }).format);
  const format = isWeightFormat(declared) ? declared : detectFormat(g.node, g.initializer);
  const ops = new Set(g.node.map((n) => n.opType));
  const opset = Number(loaded.model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 0);
  const fixed = staticEncoderInput(entry, configs);
  const specialized = fixed.shape && fixed.from ? specialize(g, entry, fixed.shape) : undefined;
  const dynamic = new Set<string>();
  for (const t of [...entry.inputs, ...entry.outputs]) {
    if (specialized?.shapes[t.name]) continue;
    for (const d of t.shape ?? [null]) if (d === null || (typeof d === 'string' && !isBatch(d))) dynamic.add(d === null ? `${t.name}:?` : d);
  }
  const perToken = entry.kind === 'decoder' || entry.kind === 'embed';
  const last = (t: TensorSpec | undefined) => { const d = t?.shape?.[t.shape.length - 1]; return typeof d === 'number' ? d : undefined; };
  const pastKeys = entry.inputs.filter((i) => /^past_key_values\.\d+\.(key|value)$/.test(i.name));
  const kv: KvInfo | undefined = pastKeys.length ? {
    layers: pastKeys.length / 2,
    elementsPerToken: pastKeys.reduce((n, t) => n + (t.shape ?? []).filter((d): d is number => typeof d === 'number').reduce((a, b) => a * b, 1), 0),
    dtype: pastKeys[0].dtype,
  } : undefined;
  const out = entry.outputs[0];
  const rows = perToken ? undefined : encoderRows(entry, g, configs);
  const hidden = entry.kind === 'decoder' ? last(entry.inputs.find((i) => i.name === 'inputs_embeds')) : last(out);
  return {
    entry, format, formatFrom: isWeightFormat(declared) ? 'manifest' : 'detected', ops, opset, dynamicDims: [...dynamic],
    params: entry.params, weightBytes: entry.bytes, perToken, hidden, tokens: rows?.rows, tokensFrom: rows?.from, kv,
    ...(specialized
      ? { flops: specialized.flops, flopsFrom: `shape inference at ${entry.inputs[0]!.name} [${fixed.shape!.join(', ')}]`, staticShapes: specialized.shapes, staticFrom: fixed.from }
      : { flops: entry.flops ? entry.flops.value : entry.kind === 'embed' ? 0 : 2 * entry.params, flopsFrom: entry.flops ? 'bricks.json' : 'estimate: 2 × params' }),
    vocab: entry.kind === 'decoder' ? last(entry.outputs.find((o) => o.name === 'logits')) : undefined,
  };
}

/**
 * An encoder at the input size its configs fix: every interface tensor's concrete shape (the outputs by
 * shape inference) and the FLOPs of one call at that size. Undefined when an output stays symbolic.
 * (bricks.json's figure for such a brick was estimated with its dynamic dims at 1, i.e. a 1×1 image.)
 */
function specialize(proto: GraphProto, entry: BrickEntry, input: readonly number[]): { shapes: Record<string, readonly number[]>; flops: number } | undefined {
  const g = new Graph({ ...proto, output: proto.output.map((o) => ({ ...o, type: undefined })) } as GraphProto);
  const types = inferTypes(g, { inputShapes: { [entry.inputs[0]!.name]: [...input] } });
  const shapes: Record<string, readonly number[]> = { [entry.inputs[0]!.name]: input };
  for (const t of [...entry.inputs.slice(1), ...entry.outputs]) {
    const s = (types.get(t.name)?.shape ?? t.shape ?? [null]).map((d, i) => (typeof d === 'number' ? d : typeof t.shape?.[i] === 'string' && isBatch(t.shape[i] as string) ? 1 : undefined));
    if (!s.every((d): d is number => d !== undefined)) return undefined;
    shapes[t.name] = s;
  }
  return { shapes, flops: estimateFlops(g, g.nodes, types, false) };
}

/**
 * Quantize records group sizes 16..256 (`w4a16-g64`, `w8a16-g128`); the cost model knows blocks of 32 and
 * 128: smaller groups count as 32 (more scale bytes), larger as 128.
 */
export function normalizeFormat(f: unknown): WeightFormat | undefined {
  if (isWeightFormat(f)) return f;
  if (typeof f !== 'string') return undefined;
  const m = /^w(4|8)a16-g(\d+)$/.exec(f);
  if (!m) return undefined;
  if (m[1] === '8') return 'w8a16';
  return Number(m[2]) >= 128 ? 'w4a16-g128' : 'w4a16-g32';
}

/** Bytes of a tensor at batch 1 with its dynamic dims bound from `dims` (unbound ones count as 1). */
export function tensorBytesAt(t: TensorSpec, dims: Readonly<Record<string, number>> = {}): number {
  const n = (t.shape ?? []).reduce<number>((a, d) => a * (typeof d === 'number' ? d : d === null ? 1 : isBatch(d) ? 1 : dims[d] ?? 1), 1);
  return n * bytesOf(t.dtype);
}

export const kvBytesPerToken = (kv: KvInfo): number => kv.elementsPerToken * bytesOf(kv.dtype);
