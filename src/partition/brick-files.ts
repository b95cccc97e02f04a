/** Writing one brick into a brick-set directory and describing it for bricks.json. */
import { copyFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { ModelProto } from 'onnx-buf';
import type { BrickEntry, FileEntry, TensorSpec } from '../formats/bricks.js';
import type { BrickKind } from '../formats/names.js';
import { Graph, valueInfoType } from '../onnx/graph.js';
import { allTensors, externalRef, loadModel, resolveInside, saveModel, sha256File, type OnnxFile } from '../onnx/model-io.js';
import { estimateFlops, graphStats } from '../onnx/stats.js';
import { realInside } from '../util/files.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { kvCacheMode } from './kv-share.js';

const AUX_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'preprocessor_config.json', 'processor_config.json', 'chat_template.jinja', 'chat_template.json', 'vocab.json', 'merges.txt',
];

export function interfaceOf(model: ModelProto): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const g = model.graph!;
  const inits = new Set(g.initializer.map((t) => t.name));
  const spec = (v: (typeof g.input)[number]): TensorSpec => {
    const t = valueInfoType(v);
    return { name: v.name, dtype: t.dtype ?? 'unknown', shape: t.shape ? [...t.shape] : null };
  };
  return { inputs: g.input.filter((i) => !inits.has(i.name)).map(spec), outputs: g.output.map(spec) };
}

/** Describes a brick file already in `dir` (params, bytes, FLOPs, hashes). */
export async function describeBrick(dir: string, file: string, name: string, kind: BrickKind): Promise<BrickEntry> {
  const loaded = await loadModel(join(dir, file));
  const g = new Graph(loaded.model.graph!);
  const stats = graphStats(g);
  const dataFiles = [...new Set([...allTensors(loaded.model.graph!)].map(externalRef).filter((r) => r).map((r) => r!.location))];
  const io = interfaceOf(loaded.model);
  const perToken = kind === 'decoder' || kind === 'embed';
  const concrete = Object.fromEntries(io.inputs.map((i) => [i.name, (i.shape ?? []).map((d) => (typeof d === 'number' ? d : 1))]));
  const types = perToken ? g.types : inferTypes(g, { inputShapes: concrete });
  const flops = estimateFlops(g, g.nodes, types, perToken);
  const kvCache = kind === 'decoder' ? kvCacheMode(g) : undefined;
  return {
    name, kind, file, dataFiles, sha256: await sha256File(join(dir, file)), ...io,
    params: stats.params, bytes: stats.bytes, nodes: stats.nodes,
    flops: { per: kind === 'vision' || kind === 'projector' ? 'image' : kind === 'audio' ? 'clip' : 'token', value: flops },
    ...(kvCache ? { kvCache } : {}),
  };
}

/**
 * Saves a cut model as `<name>.onnx`. External weights stay external (copied into `<name>.onnx_data`);
 * with `externalThreshold`, tensors of at least that many bytes go there too.
 */
export async function writeBrick(dir: string, name: string, kind: BrickKind, model: ModelProto, source: OnnxFile, externalThreshold?: number): Promise<BrickEntry> {
  const file = `${name}.onnx`;
  await saveModel(model, join(dir, file), { sourceDir: source.dir, externalThreshold });
  return describeBrick(dir, file, name, kind);
}

/** Copies an adopted brick file and its external data byte for byte. */
export async function copyBrick(dir: string, source: OnnxFile, name: string, kind: BrickKind): Promise<BrickEntry> {
  const file = basename(source.file);
  await copyFile(source.file, join(dir, file));
  const locations = new Set([...allTensors(source.model.graph!)].map(externalRef).filter((r) => r).map((r) => r!.location));
  for (const loc of locations) await copyFile(resolveInside(source.dir, loc, source.file), resolveInside(dir, loc, file));
  return describeBrick(dir, file, name, kind);
}

/** Copies tokenizer/config files found in any of `dirs` (first hit wins). */
export async function copyAuxFiles(dirs: readonly string[], out: string): Promise<FileEntry[]> {
  const files: FileEntry[] = [];
  for (const name of AUX_FILES)
    for (const d of dirs) {
      const src = join(d, name);
      const st = await stat(src).catch(() => undefined);
      if (!st?.isFile()) continue;
      await realInside(d, src, name);
      await copyFile(src, join(out, name));
      files.push({ path: name, sha256: await sha256File(src), bytes: st.size });
      break;
    }
  return files;
}

export async function sourceEntry(file: string): Promise<FileEntry> {
  return { path: file, sha256: await sha256File(file), bytes: (await stat(file)).size };
}
