/** `inspect`: what a model (any layout partition takes) holds, and the bricks partition would cut from it. */
import { stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { isNanomindError } from '../errors.js';
import type { BrickKind } from '../formats/names.js';
import type { BrickEntry, TensorSpec } from '../formats/bricks.js';
import { staticEncoderInput, type Configs as EncoderConfigs } from '../formats/encoder-input.js';
import { readJsonFile } from '../formats/json-file.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { estimateFlops, graphStats, type GraphStats } from '../onnx/stats.js';
import { interfaceOf } from './brick-files.js';
import { imageNewlineNote, LLAVA_ONEVISION } from './image-newline.js';
import { noKvCacheNotice } from '../formats/kv-cache.js';
import { detectBricks, type BrickCut, type CutOverrides } from './detect.js';
import { configDirs, readModelConfig, resolveModelLayout } from './model-input.js';
import { projectorCuts } from './split-layout.js';

/** A brick as partition would cut it (no file written yet, so no hashes). */
export interface InspectedBrick extends Omit<BrickEntry, 'sha256' | 'dataFiles' | 'flops'> {
  /** Estimated FLOPs (2 per multiply-accumulate) per image/clip (encoders) or per token (weights only). */
  readonly flops: { readonly per: string; readonly value: number; readonly estimate: true };
}

export interface InspectedFile extends GraphStats {
  readonly file: string;
  readonly irVersion: number;
  readonly opsets: Readonly<Record<string, number>>;
  readonly producer: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** With `values`: every value a node produces, in graph order, as `--cut brick=VALUE` takes them. */
  readonly values?: readonly InspectedValue[];
}

export interface InspectedValue { readonly name: string; readonly op: string; readonly node: string; readonly dtype: string; readonly shape: TensorSpec['shape'] }

export interface InspectReport {
  readonly path: string;
  readonly layout: 'monolithic' | 'split';
  readonly files: readonly InspectedFile[];
  readonly params: number;
  readonly bytes: number;
  /** The bricks `partition` would write, with the same options (empty when detection failed: see `error`). */
  readonly bricks: readonly InspectedBrick[];
  /** Why no bricks were detected: the error `partition` fails with on the same input. */
  readonly error?: { readonly code: string; readonly message: string };
  readonly notes: readonly string[];
}

export interface InspectOptions {
  readonly cuts?: CutOverrides;
  readonly dtype?: string;
  readonly splitProjector?: boolean;
  /** List every node output (the names `--cut` takes). */
  readonly values?: boolean;
}

/** config.json and preprocessor_config.json, raw, from the first folder that has each. */
async function readMediaConfigs(dirs: readonly string[]): Promise<EncoderConfigs> {
  const first = async (name: string) => {
    for (const d of dirs) if (await stat(join(d, name)).catch(() => undefined)) return await readJsonFile(join(d, name), 'E_CONFIG_INVALID') as Record<string, unknown>;
    return undefined;
  };
  return { config: await first('config.json'), preprocessor: await first('preprocessor_config.json') };
}

const flopsUnit = (kind: BrickKind): string => (kind === 'vision' || kind === 'projector' ? 'image' : kind === 'audio' ? 'clip' : 'token');

/** Inspects a model in any layout partition takes, detecting bricks exactly as partition does (model-input.ts, detect.ts). */
export async function inspectModel(path: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const layout = await resolveModelLayout(path, opts.dtype);
  const config = await readModelConfig(configDirs(layout.root));
  const mediaConfigs = await readMediaConfigs(configDirs(layout.root));
  const notes: string[] = [...layout.notices];
  const files: InspectedFile[] = [];
  const bricks: InspectedBrick[] = [];
  let error: InspectReport['error'];
  // An encoder-decoder folder is the bricks partition adopts (./encoder-decoder.ts owns the list).
  if (layout.form === 'encoder-decoder') notes.push(layout.pair.form === 'vision'
    ? 'vision encoder-decoder model: image features go in front of the prompt embeddings into the encoder brick, which the decoder reads through cross-attention'
    : 'encoder-decoder model: the audio brick feeds the decoder through cross-attention');
  const targets = layout.form === 'split' ? layout.split.files.map((f) => ({ file: f.file, kind: f.kind as BrickKind | undefined }))
    : layout.form === 'encoder-decoder' ? layout.pair.files.map((f) => ({ file: f.file, kind: f.kind as BrickKind | undefined }))
      : [{ file: layout.file, kind: undefined }];

  for (const t of targets) {
    const src = await loadModel(t.file);
    const g = new Graph(src.model.graph!);
    for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
    const stats = graphStats(g);
    const io = interfaceOf(src.model);
    const file = relative(layout.root, t.file);
    files.push({
      file, irVersion: Number(src.model.irVersion),
      opsets: Object.fromEntries(src.model.opsetImport.map((o) => [o.domain || 'ai.onnx', Number(o.version)])),
      producer: `${src.model.producerName} ${src.model.producerVersion}`.trim(), ...io, ...stats,
      ...(opts.values ? { values: g.nodes.flatMap((n) => n.output.filter(Boolean).map((v) => {
        const t = g.types.get(v);
        return { name: v, op: n.opType, node: n.name, dtype: t?.dtype ?? 'unknown', shape: t?.shape ? [...t.shape] : null };
      })) } : {}),
    });
    const concrete = Object.fromEntries(io.inputs.map((i) => [i.name, (i.shape ?? []).map((d) => (typeof d === 'number' ? d : 1))]));
    // An encoder with dynamic image / audio dims is counted at the size its processor config fixes (one call).
    const fixed = t.kind === 'vision' || t.kind === 'audio' ? staticEncoderInput({ kind: t.kind, inputs: io.inputs }, mediaConfigs) : undefined;
    if (fixed?.shape && fixed.from) {
      concrete[io.inputs[0]!.name] = [...fixed.shape];
      notes.push(`${t.kind} FLOPs per ${flopsUnit(t.kind!)} at ${io.inputs[0]!.name} [${fixed.shape.join(', ')}]: dynamic dims from ${fixed.from}`);
    }
    const concreteTypes = inferTypes(g, { inputShapes: concrete });
    const describe = (cut: BrickCut): InspectedBrick => {
      const piece = extractModel(src.model, g, { graphName: cut.name, inputs: cut.inputs, outputs: cut.outputs });
      const s = graphStats(g, piece.nodes, piece.initializers.map((n) => g.initializers.get(n)!));
      const perToken = cut.kind === 'decoder' || cut.kind === 'embed';
      return { name: cut.name, kind: cut.kind, file, ...interfaceOf(piece.model), params: s.params, bytes: s.bytes, nodes: s.nodes,
        flops: { per: flopsUnit(cut.kind), value: estimateFlops(g, piece.nodes, perToken ? g.types : concreteTypes, perToken), estimate: true } };
    };
    // As partition's adoption will say: whether the anyres tiles can be packed (./image-newline.ts).
    if (t.kind === 'vision' && config.modelType === LLAVA_ONEVISION)
      notes.push(await imageNewlineNote(t.file, [layout.root, ...configDirs(layout.root)]));
    if (t.kind === 'vision' && layout.form === 'split' && (opts.splitProjector || opts.cuts?.projector)) {
      // As partition's adoption does: the vision file cut in two at the projector.
      bricks.push(...projectorCuts(g, io, opts.cuts?.projector).cuts.map(describe));
      continue;
    }
    if (t.kind) {
      const perToken = t.kind === 'decoder' || t.kind === 'embed';
      bricks.push({ name: t.kind, kind: t.kind, file, ...io, params: stats.params, bytes: stats.bytes, nodes: stats.nodes,
        flops: { per: flopsUnit(t.kind), value: estimateFlops(g, g.nodes, perToken ? g.types : concreteTypes, perToken), estimate: true } });
      continue;
    }
    try {
      const found = detectBricks(g, { cuts: opts.cuts, splitProjector: opts.splitProjector, tokenIds: config.tokenIds });
      notes.push(...found.notes);
      bricks.push(...found.bricks.map(describe));
    } catch (e) {
      if (!isNanomindError(e)) throw e;
      error = { code: e.code, message: e.message };
      notes.push(`no bricks detected: error[${e.code}] ${e.message}${e.detail.hint ? ` (hint: ${e.detail.hint})` : ''}`);
    }
  }
  const kv = noKvCacheNotice(bricks);
  if (kv) notes.push(kv);
  return {
    path: resolve(path), layout: layout.form === 'monolithic' ? 'monolithic' : 'split', files,
    params: files.reduce((a, f) => a + f.params, 0), bytes: files.reduce((a, f) => a + f.bytes, 0), bricks, notes,
    ...(error ? { error } : {}),
  };
}
