/**
 * One brick → one format: load the float brick, run the format's rewrite (with calibration when the
 * format or algorithm needs it), save it beside its siblings. Weights are read one tensor at a time and
 * only the rewritten (smaller) tensors are held; untouched tensors stream from the source file on save.
 */
import { copyFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { NodeProto } from 'onnx-buf';
import { fail } from '../errors.js';
import type { BrickEntry } from '../formats/bricks.js';
import { DT } from '../onnx/dtype.js';
import { allTensors, externalRef, loadModel, resolveInside, saveModel, type OnnxFile } from '../onnx/model-io.js';
import { planAwq, type AwqGroup } from './awq.js';
import { collectStats } from './calibrate.js';
import { ModelEdit } from './edit.js';
import { acceleratorFor, type FormatSpec } from './format-spec.js';
import { toFloat16 } from './formats/fp16.js';
import { toGatherBlockQuantized } from './formats/gather-block.js';
import { nbitsTargets, toMatMulNBits, type Prescale } from './formats/matmulnbits.js';
import { qdqActivations, toQdqInt8, type Range } from './formats/qdq-int8.js';
import { checkRknn, type RknnCheck } from './rknn-check.js';
import type { Feeds } from './samples.js';
import type { CalibMethod } from './stats.js';

export type WeightAlgorithm = 'rtn' | 'awq';

export interface BrickJob {
  readonly srcDir: string;
  readonly brick: BrickEntry;
  readonly format: FormatSpec;
  readonly outDir: string;
  readonly algorithm: WeightAlgorithm;
  readonly symmetric: boolean;
  readonly accuracyLevel: number;
  readonly calibMethod: CalibMethod;
  readonly calib: readonly Feeds[];
  /** Where temporary calibration models go (removed after use). */
  readonly scratch: string;
  readonly threads?: number;
  readonly onProgress?: (what: string) => void;
  /** AWQ's α fixed instead of searched (ablation). */
  readonly awqAlpha?: number;
}

export interface BrickJobResult {
  readonly file: string;
  readonly algorithm: 'none' | 'cast' | 'rtn' | 'awq' | `qdq-${CalibMethod}`;
  readonly rewritten: Record<string, number>;
  readonly notes: string[];
  readonly awq?: readonly AwqGroup[];
  readonly rknn?: RknnCheck;
}

/** On-disk bytes of a brick: its .onnx plus its external data files. */
export async function brickDiskBytes(dir: string, b: Pick<BrickEntry, 'file' | 'dataFiles'>): Promise<number> {
  let n = 0;
  for (const f of [b.file, ...b.dataFiles]) n += (await stat(resolveInside(dir, f, 'brick file'))).size;
  return n;
}

async function copyAsIs(src: OnnxFile, outDir: string): Promise<string> {
  const file = basename(src.file);
  await copyFile(src.file, join(outDir, file));
  const locations = new Set([...allTensors(src.model.graph!)].map(externalRef).filter((r) => r).map((r) => r!.location));
  for (const loc of locations) await copyFile(resolveInside(src.dir, loc, src.file), resolveInside(outDir, loc, file));
  return file;
}

export async function quantizeBrick(j: BrickJob): Promise<BrickJobResult> {
  const src = await loadModel(join(j.srcDir, j.brick.file));
  const notes: string[] = [];
  if (j.format.kind === 'fp32') return { file: await copyAsIs(src, j.outDir), algorithm: 'none', rewritten: {}, notes };
  const edit = new ModelEdit(src.model, src.dir);
  const rewritten: Record<string, number> = {};
  let algorithm: BrickJobResult['algorithm'];
  let awq: AwqGroup[] | undefined;
  if (j.format.kind === 'fp16') {
    const r = await toFloat16(edit);
    Object.assign(rewritten, { float16: r.fp16Nodes, float32Kept: r.fp32Nodes, Cast: r.casts });
    algorithm = 'cast';
  } else if (j.format.kind === 'qdq') {
    if (src.model.graph!.initializer.some((t) => t.dataType === DT.FLOAT16 && t.dims.length > 0))
      throw fail('E_QUANT_INPUT', `brick '${j.brick.name}' has float16 weights; w8a8 calibrates a float32 brick`,
        { hint: 'partition the float32 variant of the model (without --dtype fp16)' });
    const acts = qdqActivations(edit);
    j.onProgress?.(`calibrate ${j.brick.name} (${acts.length} activations, ${j.calib.length} samples)`);
    const stats = await collectStats(src, j.calib, { ranges: acts, histograms: j.calibMethod !== 'minmax' }, j.scratch, j.threads);
    const ranges = new Map<string, Range>([...stats.ranges].map(([k, v]) => [k, v.range(j.calibMethod)]));
    const r = await toQdqInt8(edit, ranges);
    rewritten.QDQ = r.nodes;
    if (r.skipped.length) notes.push(`no calibration range for ${r.skipped.length} activation(s); left float: ${r.skipped.slice(0, 3).join(', ')}`);
    algorithm = `qdq-${j.calibMethod}`;
  } else {
    const p = { bits: j.format.bits, block: j.format.block, symmetric: j.symmetric };
    let prescales = new Map<NodeProto, Prescale>();
    algorithm = 'rtn';
    const inputs = [...new Set(nbitsTargets(edit).map((t) => t.node.input[0]))];
    if (j.algorithm === 'awq' && j.format.bits === 4 && inputs.length) {
      if (!j.calib.length) notes.push('AWQ needs calibration samples; used round-to-nearest');
      else {
        j.onProgress?.(`calibrate ${j.brick.name} (${inputs.length} MatMul inputs, ${j.calib.length} samples)`);
        const stats = await collectStats(src, j.calib, { channels: inputs, rows: 128 }, j.scratch, j.threads);
        j.onProgress?.(`AWQ search ${j.brick.name}`);
        const plan = await planAwq(edit, p, stats.channels, j.awqAlpha === undefined ? {} : { alpha: j.awqAlpha });
        prescales = plan.prescales;
        awq = plan.groups;
        algorithm = 'awq';
      }
    }
    const present = src.model.graph!.node.filter((n) => n.opType === 'MatMulNBits' && n.domain === 'com.microsoft').length;
    if (present) notes.push(`${present} MatMulNBits node(s) already in the brick are kept as they are (their own bits and block size)`);
    rewritten.MatMulNBits = await toMatMulNBits(edit, { ...p, accuracyLevel: j.accuracyLevel }, prescales,
      (w) => j.onProgress?.(`quantize ${j.brick.name}: ${w}`));
    const g = await toGatherBlockQuantized(edit, p);
    rewritten.GatherBlockQuantized = g.count;
    notes.push(...g.skipped);
    const nested = subgraphMatMuls(src.model.graph!.node);
    // Optimum's merged decoder computes the cross-attention K/V inside its use_cache_branch If: those
    // weights are read from the outer graph by subgraph nodes this rewrite does not reach, so they stay float.
    if (nested) notes.push(`${nested} MatMul/Gemm node(s) inside If subgraphs (e.g. cross-attention K/V projections) are left float`);
    if (!rewritten.MatMulNBits && !g.count) notes.push(`no MatMul/Gemm weight or embedding table to quantize; the brick stays float`);
  }
  const model = edit.build({ dropFloatValueInfo: j.format.kind === 'fp16' });
  const file = basename(src.file);
  const hadExternal = [...allTensors(src.model.graph!)].some((t) => externalRef(t));
  await saveModel(model, join(j.outDir, file), { sourceDir: src.dir, externalThreshold: hadExternal ? 1024 : undefined });
  // NPU-targeted outputs must be loadable by rknn-toolkit2.
  const rknn = acceleratorFor(j.format, j.brick.kind) === 'npu' ? checkRknn(model) : undefined;
  return { file, algorithm, rewritten, notes, awq, rknn };
}

/** MatMul / Gemm nodes inside the subgraphs (If / Loop bodies) of `nodes`, at any depth. */
function subgraphMatMuls(nodes: readonly NodeProto[], nested = false): number {
  let n = 0;
  for (const x of nodes) {
    if (nested && (x.opType === 'MatMul' || x.opType === 'Gemm')) n++;
    for (const a of x.attribute) for (const g of a.g ? [a.g, ...a.graphs] : a.graphs) n += subgraphMatMuls(g.node, true);
  }
  return n;
}
