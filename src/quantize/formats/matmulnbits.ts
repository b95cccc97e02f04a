/**
 * Weight-only block quantization of MatMul/Gemm weights to com.microsoft MatMulNBits (ORT contrib op,
 * layout in ../block-quant.ts). A MatMul qualifies when its second input is a rank-2 float initializer
 * `[K, N]` (exporters store Linear weights transposed, so that is the usual case) and its first is not
 * constant; a Gemm when transA = 0 and C is absent or a `[N]` initializer (alpha is folded into the
 * scales, beta·C becomes the op's bias).
 *
 *   MatMul(A, W[K,N])  →  MatMulNBits(A, B uint8[N,kb,blob], scales[N,kb], zero_points?) {K, N, bits, block_size, accuracy_level}
 */
import type { NodeProto, TensorProto } from 'onnx-buf';
import { makeTensor } from '../../onnx/builder.js';
import { DT } from '../../onnx/dtype.js';
import { packZeroPoints, type BlockParams, type BlockQuantized, type PrescaleOpts } from '../block-quant.js';
import { attrFloat, attrInt, MS_DOMAIN, type ModelEdit } from '../edit.js';
import { floatTensor, isFloatWeight, quantizeStored, readFloat, transpose } from '../tensors.js';

export interface NBitsTarget {
  readonly node: NodeProto;
  readonly weight: TensorProto;
  readonly K: number;
  readonly N: number;
  /** True when the weight is stored [N, K] (Gemm transB = 1). */
  readonly transposed: boolean;
}

/** AWQ's weight-side inputs (see ../awq.ts). */
export type Prescale = PrescaleOpts;

/** MatMul/Gemm nodes whose weight can become MatMulNBits. */
export function nbitsTargets(edit: ModelEdit): NBitsTarget[] {
  const out: NBitsTarget[] = [];
  for (const n of edit.nodes) {
    if (n.domain && n.domain !== 'ai.onnx') continue;
    const w = edit.inits.get(n.input[1]);
    if (!w || !isFloatWeight(w) || w.dims.length !== 2 || edit.inits.has(n.input[0])) continue;
    const [d0, d1] = w.dims.map(Number);
    if (n.opType === 'MatMul') out.push({ node: n, weight: w, K: d0, N: d1, transposed: false });
    else if (n.opType === 'Gemm' && attrInt(n, 'transA', 0) === 0) {
      const c = n.input[2] ? edit.inits.get(n.input[2]) : undefined;
      const N = attrInt(n, 'transB', 0) ? d0 : d1;
      if (n.input[2] && !(c && c.dims.length === 1 && Number(c.dims[0]) === N)) continue;
      out.push({ node: n, weight: w, K: attrInt(n, 'transB', 0) ? d1 : d0, N, transposed: attrInt(n, 'transB', 0) === 1 });
    }
  }
  return out;
}

/** A target's weight as [N, K] float32 (each output channel contiguous along K), for AWQ's search. */
export async function weightNK(edit: ModelEdit, t: NBitsTarget): Promise<Float32Array> {
  const w = await readFloat(t.weight, edit.dir);
  return t.transposed ? w : transpose(w, t.K, t.N);
}

/** Quantized tensors already written, by weight name, so a weight read by several MatMuls is stored once. */
export type NBitsCache = Map<string, { readonly q: BlockQuantized; readonly names: readonly string[] }>;

/**
 * Rewrites one target in place in `edit`; returns the quantized blocks (for reports and tests).
 * `accuracyLevel` undefined leaves the attribute out (ORT's default 0), as MatMul4BitsQuantizer does when
 * not given one; `flatScales` stores scales as [N·kBlocks], the shape that quantizer writes (ORT reads both).
 */
export async function rewriteMatMulNBits(edit: ModelEdit, t: NBitsTarget, p: BlockParams & { accuracyLevel: number | undefined; flatScales?: boolean },
  pre: Prescale = {}, cache?: NBitsCache): Promise<BlockQuantized> {
  const dtype = t.weight.dataType === DT.FLOAT16 ? DT.FLOAT16 : DT.FLOAT;
  const base = t.weight.name;
  const alpha = t.node.opType === 'Gemm' ? attrFloat(t.node, 'alpha', 1) : 1;
  const key = `${base}|${alpha}`;
  const plain = !pre.colScale && !pre.clip;
  let hit = plain ? cache?.get(key) : undefined;
  if (!hit) {
    const q = await quantizeStored(t.weight, edit.dir, t.transposed ? 'NK' : 'KN', t.K, t.N, p, pre);
    const scales = alpha === 1 ? q.scales : q.scales.map((s) => s * alpha);
    hit = { q, names: [
      edit.addInit(makeTensor(edit.unique(`${base}_Q${p.bits}`), [t.N, q.kBlocks, (p.block * p.bits) / 8], q.packed)),
      edit.addInit(floatTensor(edit.unique(`${base}_scales`), p.flatScales ? [t.N * q.kBlocks] : [t.N, q.kBlocks], scales, dtype)),
      p.symmetric ? '' : edit.addInit(makeTensor(edit.unique(`${base}_zp`), [t.N, Math.ceil((q.kBlocks * p.bits) / 8)], packZeroPoints(q.zeroPoints, t.N, q.kBlocks, p.bits))),
    ] };
    if (plain) cache?.set(key, hit);
  }
  const q = hit.q;
  const inputs = [t.node.input[0], ...hit.names];
  if (t.node.opType === 'Gemm' && t.node.input[2]) {
    const beta = attrFloat(t.node, 'beta', 1);
    const c = edit.inits.get(t.node.input[2])!;
    const bias = beta === 1 && c.dataType === dtype ? c.name
      : edit.addInit(floatTensor(edit.unique(`${c.name}_bias`), [t.N], (await readFloat(c, edit.dir)).map((v) => v * beta), dtype));
    inputs.push('', bias);
  }
  while (inputs[inputs.length - 1] === '') inputs.pop();
  edit.replace(t.node, edit.node('MatMulNBits', inputs, t.node.output,
    { K: t.K, N: t.N, bits: p.bits, block_size: p.block, accuracy_level: p.accuracyLevel },
    { name: `${t.node.name}_Q${p.bits}`, domain: MS_DOMAIN }));
  return q;
}

/** Every MatMulNBits-able weight in the brick, RTN or with per-node prescales (AWQ). */
export async function toMatMulNBits(edit: ModelEdit, p: BlockParams & { accuracyLevel: number },
  prescales: ReadonlyMap<NodeProto, Prescale> = new Map(), onTensor?: (name: string) => void): Promise<number> {
  const targets = nbitsTargets(edit);
  const cache: NBitsCache = new Map();
  for (const t of targets) {
    onTensor?.(t.weight.name);
    await rewriteMatMulNBits(edit, t, p, prescales.get(t.node), cache);
  }
  return targets.length;
}
