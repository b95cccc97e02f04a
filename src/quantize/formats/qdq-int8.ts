/**
 * Static int8 quantization in the QDQ form (QuantizeLinear → DequantizeLinear pairs around float ops),
 * the form rknn-toolkit2 and ONNX Runtime both read:
 *
 * - weights of MatMul/Gemm/Conv: int8, symmetric, per output channel (DequantizeLinear `axis`: 1 for a
 *   `[K, N]` MatMul weight, 0 for Conv `[O, I, kh, kw]`, 0/1 for Gemm by transB); zero point 0;
 * - their biases (Conv, Gemm C): int32 with scale s_x·s_w[c], zero point omitted (ONNX requires 0);
 * - activations feeding those ops (attention's activation × activation MatMuls included): int8,
 *   asymmetric, one scale/zero point per tensor from calibrated ranges (min-max, percentile or KL).
 *
 * Only standard-domain ops, per-axis DequantizeLinear needs opset ≥ 13; nothing here raises the opset.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type NodeProto } from 'onnx-buf';
import { fail } from '../../errors.js';
import { makeTensor } from '../../onnx/builder.js';
import { DT } from '../../onnx/dtype.js';
import { roundEven } from '../block-quant.js';
import { attrInt, type ModelEdit } from '../edit.js';
import { readFloat } from '../tensors.js';

export interface Range { readonly min: number; readonly max: number }

interface Plan { readonly node: NodeProto; readonly acts: readonly number[]; readonly weight?: { index: number; axis: number }; readonly bias?: number }

const isStd = (n: NodeProto): boolean => !n.domain || n.domain === 'ai.onnx';

function plans(edit: ModelEdit): Plan[] {
  const out: Plan[] = [];
  const isConst = (v: string) => edit.inits.has(v);
  for (const n of edit.nodes) {
    if (!isStd(n)) continue;
    const w = edit.inits.get(n.input[1]);
    const floatW = w && w.dataType === DT.FLOAT;
    if (n.opType === 'MatMul') {
      if (isConst(n.input[0])) continue;
      if (floatW && w!.dims.length === 2) out.push({ node: n, acts: [0], weight: { index: 1, axis: 1 } });
      else if (!isConst(n.input[1])) out.push({ node: n, acts: [0, 1] });
    } else if (n.opType === 'Conv' && floatW && !isConst(n.input[0])) {
      out.push({ node: n, acts: [0], weight: { index: 1, axis: 0 }, bias: n.input[2] && isConst(n.input[2]) ? 2 : undefined });
    } else if (n.opType === 'Gemm' && floatW && !isConst(n.input[0]) && attrInt(n, 'transA', 0) === 0) {
      const c = n.input[2] ? edit.inits.get(n.input[2]) : undefined;
      out.push({ node: n, acts: [0], weight: { index: 1, axis: attrInt(n, 'transB', 0) ? 0 : 1 }, bias: c && c.dims.length === 1 ? 2 : undefined });
    }
  }
  return out;
}

/** The activation tensors whose ranges calibration must find. */
export function qdqActivations(edit: ModelEdit): string[] {
  return [...new Set(plans(edit).flatMap((p) => p.acts.map((i) => p.node.input[i])))];
}

/** int8 activation scale/zero point for a range (widened to include 0, as QuantizeLinear needs). */
export function activationParams(r: Range): { scale: number; zp: number } {
  const lo = Math.min(r.min, 0), hi = Math.max(r.max, 0);
  const scale = Math.fround(hi > lo ? (hi - lo) / 255 : 1);
  return { scale, zp: Math.max(-128, Math.min(127, roundEven(-128 - lo / scale))) };
}

export interface QdqResult { readonly nodes: number; readonly activations: number; readonly skipped: readonly string[] }

export async function toQdqInt8(edit: ModelEdit, ranges: ReadonlyMap<string, Range>): Promise<QdqResult> {
  if (edit.opset < 13) throw fail('E_QUANT_OPSET', `w8a8 needs opset ≥ 13 for per-channel DequantizeLinear; the brick has opset ${edit.opset}`,
    { hint: 're-export the model at opset 13–19, or choose fp16 for this brick' });
  const byNode = new Map(plans(edit).map((p) => [p.node, p]));
  const dq = new Map<string, string>();
  const actScale = new Map<string, number>();
  const skipped = new Set<string>();
  const out: NodeProto[] = [];
  let count = 0;
  const quantizeActivation = (v: string): string => {
    const hit = dq.get(v);
    if (hit) return hit;
    const r = ranges.get(v);
    if (!r) { skipped.add(v); return v; }
    const { scale, zp } = activationParams(r);
    const s = edit.addInit(makeTensor(edit.unique(`${v}_scale`), [], Float32Array.of(scale)));
    const z = edit.addInit(makeTensor(edit.unique(`${v}_zero_point`), [], Int8Array.of(zp)));
    const q = edit.unique(`${v}_quantized`), d = edit.unique(`${v}_dequantized`);
    out.push(edit.node('QuantizeLinear', [v, s, z], [q]), edit.node('DequantizeLinear', [q, s, z], [d]));
    dq.set(v, d);
    actScale.set(v, scale);
    return d;
  };
  for (const n of edit.nodes) {
    const p = byNode.get(n);
    if (!p) { out.push(n); continue; }
    const inputs = [...n.input];
    for (const i of p.acts) inputs[i] = quantizeActivation(n.input[i]);
    let wScales: Float32Array | undefined;
    if (p.weight) {
      const w = edit.inits.get(n.input[p.weight.index])!;
      const { name, scales } = await weightDq(edit, w.name, p.weight.axis, out);
      inputs[p.weight.index] = name;
      wScales = scales;
    }
    const sx = actScale.get(n.input[p.acts[0]]);
    if (p.bias !== undefined && wScales && sx !== undefined) inputs[p.bias] = await biasDq(edit, n.input[p.bias], wScales, sx, out);
    out.push(create(NodeProtoSchema, { ...n, input: inputs }));
    count++;
  }
  edit.nodes = out;
  return { nodes: count, activations: dq.size, skipped: [...skipped] };
}

const weightCache = new WeakMap<ModelEdit, Map<string, { name: string; scales: Float32Array }>>();

/** int8 symmetric per-channel weight + its DequantizeLinear (shared when a weight feeds several nodes). */
async function weightDq(edit: ModelEdit, weight: string, axis: number, out: NodeProto[]): Promise<{ name: string; scales: Float32Array }> {
  let cache = weightCache.get(edit);
  if (!cache) weightCache.set(edit, (cache = new Map()));
  const key = `${weight}|${axis}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const t = edit.inits.get(weight)!;
  const dims = t.dims.map(Number);
  const w = await readFloat(t, edit.dir);
  const C = dims[axis];
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const chan = (i: number) => Math.floor(i / inner) % C;
  const absmax = new Float32Array(C);
  for (let i = 0; i < w.length; i++) absmax[chan(i)] = Math.max(absmax[chan(i)], Math.abs(w[i]));
  const scales = absmax.map((m) => Math.fround(m > 0 ? m / 127 : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-127, Math.min(127, roundEven(w[i] / scales[chan(i)])));
  const qName = edit.addInit(makeTensor(edit.unique(`${weight}_int8`), dims, q));
  const sName = edit.addInit(makeTensor(edit.unique(`${weight}_scale`), [C], scales));
  const zName = edit.addInit(makeTensor(edit.unique(`${weight}_zero_point`), [C], new Int8Array(C)));
  const name = edit.unique(`${weight}_dequantized`);
  out.push(edit.node('DequantizeLinear', [qName, sName, zName], [name], { axis }));
  const r = { name, scales };
  cache.set(key, r);
  return r;
}

async function biasDq(edit: ModelEdit, bias: string, wScales: Float32Array, sx: number, out: NodeProto[]): Promise<string> {
  const b = await readFloat(edit.inits.get(bias)!, edit.dir);
  const scales = wScales.map((s) => Math.fround(s * sx));
  const q = new Int32Array(b.length);
  for (let i = 0; i < b.length; i++) q[i] = roundEven(b[i] / scales[i]);
  const qName = edit.addInit(makeTensor(edit.unique(`${bias}_int32`), [b.length], q));
  const sName = edit.addInit(makeTensor(edit.unique(`${bias}_scale`), [b.length], scales));
  const name = edit.unique(`${bias}_dequantized`);
  out.push(edit.node('DequantizeLinear', [qName, sName], [name], { axis: 0 }));
  return name;
}
