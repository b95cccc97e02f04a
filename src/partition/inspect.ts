/** `inspect`: what a model (file or split folder) holds, and the bricks partition would cut from it. */
import { stat } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { fail, isNanomindError } from '../errors.js';
import type { BrickKind } from '../formats/names.js';
import type { BrickEntry, TensorSpec } from '../formats/bricks.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { estimateFlops, graphStats, type GraphStats } from '../onnx/stats.js';
import { interfaceOf } from './brick-files.js';
import { detectBricks, type CutOverrides } from './detect.js';
import { findEncoderDecoderLayout } from './encoder-decoder.js';
import { findSplitLayout } from './split-layout.js';

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
}

export interface InspectReport {
  readonly path: string;
  readonly layout: 'monolithic' | 'split';
  readonly files: readonly InspectedFile[];
  readonly params: number;
  readonly bytes: number;
  readonly bricks: readonly InspectedBrick[];
  readonly notes: readonly string[];
}

const flopsUnit = (kind: BrickKind): string => (kind === 'vision' || kind === 'projector' ? 'image' : kind === 'audio' ? 'clip' : 'token');

export async function inspectModel(path: string, opts: { cuts?: CutOverrides; dtype?: string } = {}): Promise<InspectReport> {
  const abs = resolve(path);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw fail('E_FILE_NOT_FOUND', `${path}: no such file or directory`, { file: abs });
  // An encoder-decoder pair (Whisper) is two bricks, as partition adopts it (./encoder-decoder.ts).
  const seq2seq = st.isDirectory() ? await findEncoderDecoderLayout(abs, opts.dtype) : undefined;
  const split = st.isDirectory() && !seq2seq ? await findSplitLayout(abs, opts.dtype) : undefined;
  const notes: string[] = seq2seq ? ['encoder-decoder model: the audio brick feeds the decoder through cross-attention'] : [];
  const files: InspectedFile[] = [];
  const bricks: InspectedBrick[] = [];
  const targets: { file: string; kind?: BrickKind }[] = seq2seq ? [{ file: seq2seq.encoder, kind: 'audio' }, { file: seq2seq.decoder, kind: 'decoder' }]
    : split ? split.files.map((f) => ({ file: f.file, kind: f.kind })) : [{ file: st.isDirectory() ? '' : abs, kind: undefined }];
  if (!targets[0].file) throw fail('E_PARTITION_INPUT', `${path}: not a split-layout folder; pass the .onnx file`);

  for (const t of targets) {
    const src = await loadModel(t.file);
    const g = new Graph(src.model.graph!);
    for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
    const stats = graphStats(g);
    const io = interfaceOf(src.model);
    files.push({
      file: relative(st.isDirectory() ? abs : resolve(abs, '..'), t.file), irVersion: Number(src.model.irVersion),
      opsets: Object.fromEntries(src.model.opsetImport.map((o) => [o.domain || 'ai.onnx', Number(o.version)])),
      producer: `${src.model.producerName} ${src.model.producerVersion}`.trim(), ...io, ...stats,
    });
    const concrete = Object.fromEntries(io.inputs.map((i) => [i.name, (i.shape ?? []).map((d) => (typeof d === 'number' ? d : 1))]));
    const concreteTypes = inferTypes(g, { inputShapes: concrete });
    if (t.kind) {
      const perToken = t.kind === 'decoder' || t.kind === 'embed';
      bricks.push({ name: t.kind, kind: t.kind, file: files[files.length - 1].file, ...io, params: stats.params, bytes: stats.bytes, nodes: stats.nodes,
        flops: { per: flopsUnit(t.kind), value: estimateFlops(g, g.nodes, perToken ? g.types : concreteTypes, perToken), estimate: true } });
      continue;
    }
    try {
      const found = detectBricks(g, { cuts: opts.cuts });
      notes.push(...found.notes);
      for (const cut of found.bricks) {
        const piece = extractModel(src.model, g, { graphName: cut.name, inputs: cut.inputs, outputs: cut.outputs });
        const s = graphStats(g, piece.nodes, piece.initializers.map((n) => g.initializers.get(n)!));
        const pio = interfaceOf(piece.model);
        const perToken = cut.kind === 'decoder' || cut.kind === 'embed';
        bricks.push({ name: cut.name, kind: cut.kind, file: files[0].file, ...pio, params: s.params, bytes: s.bytes, nodes: s.nodes,
          flops: { per: flopsUnit(cut.kind), value: estimateFlops(g, piece.nodes, perToken ? g.types : concreteTypes, perToken), estimate: true } });
      }
    } catch (e) {
      if (!isNanomindError(e)) throw e;
      notes.push(`no bricks detected: ${(e as Error).message}`);
    }
  }
  return {
    path: abs, layout: split || seq2seq ? 'split' : 'monolithic', files,
    params: files.reduce((a, f) => a + f.params, 0), bytes: files.reduce((a, f) => a + f.bytes, 0), bricks, notes,
  };
}
