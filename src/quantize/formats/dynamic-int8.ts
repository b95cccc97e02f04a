/**
 * Dynamic 8-bit quantization in the form onnxruntime's `quantize_dynamic` / `ONNXQuantizer` writes in
 * IntegerOps mode (what transformers.js' `scripts/quantize.py` runs for its `_quantized`, `_int8` and
 * `_uint8` files): weights are quantized once, per tensor; activations are quantized at run time.
 *
 *   MatMul(A, W)   →  DynamicQuantizeLinear(A) → A_q, A_scale, A_zp            (uint8, one per activation)
 *                     MatMulInteger(A_q, W_q, A_zp, W_zp) → Cast(float) → Mul(·, Mul(A_scale, W_scale))
 *   Conv(X, W, b)  →  ConvInteger(X_q, W_q, X_zp, W_zp) → Cast → Mul(scales) → Add(Reshape(b, [1, −1, 1, …]))
 *   Gather(T, idx) →  Gather(T_q, idx) → DequantizeLinear(·, T_scale, T_zp)
 *
 * Only MatMuls whose B is a constant float initializer qualify (the script's `MatMulConstBOnly`).
 * Weight codes follow `quant_utils.compute_scale_zp` / `quantize_nparray`: the range is widened to
 * include 0; int8 weights are symmetric (scale = absmax/127, zero point 0, codes in [−127, 127]);
 * uint8 weights are asymmetric (scale = (max − min)/255, zero point round(−min/scale)); codes are
 * round-half-even of the float32 quotient plus the zero point, clipped. Names follow the quantizer's
 * (`<w>_quantized`, `<w>_scale`, `<x>_QuantizeLinear`, `<node>_quant`, …) so a file diffs cleanly
 * against a real export.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type NodeProto } from 'onnx-buf';
import { makeTensor } from '../../onnx/builder.js';
import { DT } from '../../onnx/dtype.js';
import { roundEven } from '../block-quant.js';
import type { ModelEdit } from '../edit.js';
import { readFloat } from '../tensors.js';

export type WeightType = 'int8' | 'uint8';

export interface PerTensorQuantized {
  readonly codes: Int8Array | Uint8Array;
  readonly scale: number;
  readonly zeroPoint: number;
}

/** One tensor, per-tensor scale and zero point, as ORT's quantizer computes them (see the header). */
export function quantizePerTensor(w: Float32Array, type: WeightType): PerTensorQuantized {
  let lo = 0, hi = 0;
  for (let i = 0; i < w.length; i++) { if (w[i] < lo) lo = w[i]; if (w[i] > hi) hi = w[i]; }
  const [qmin, qmax] = type === 'int8' ? [-127, 127] : [0, 255];
  if (type === 'int8') { const m = Math.max(-lo, hi); lo = -m; hi = m; }
  let scale = Math.fround((hi - lo) / (qmax - qmin));
  let zeroPoint = scale === 0 ? 0 : roundEven(qmin - lo / scale);
  if (scale === 0) { scale = 1; zeroPoint = 0; } // an all-zero tensor: ORT uses scale 1, zero point 0
  const codes = type === 'int8' ? new Int8Array(w.length) : new Uint8Array(w.length);
  for (let i = 0; i < w.length; i++) codes[i] = Math.min(qmax, Math.max(qmin, roundEven(Math.fround(w[i] / scale)) + zeroPoint));
  return { codes, scale, zeroPoint };
}

export interface DynamicInt8Result {
  readonly MatMulInteger: number;
  readonly ConvInteger: number;
  readonly Gather: number;
}

interface QuantizedName { readonly q: string; readonly scale: string; readonly zp: string }

export async function toDynamicInt8(edit: ModelEdit, weightType: WeightType): Promise<DynamicInt8Result> {
  const weights = new Map<string, QuantizedName>();
  const acts = new Map<string, QuantizedName>();
  const out: NodeProto[] = [];
  const counts = { MatMulInteger: 0, ConvInteger: 0, Gather: 0 };
  const floatInit = (v: string) => { const t = edit.inits.get(v); return t && t.dataType === DT.FLOAT ? t : undefined; };

  const weight = async (name: string): Promise<QuantizedName> => {
    let hit = weights.get(name);
    if (hit) return hit;
    const t = edit.inits.get(name)!;
    const r = quantizePerTensor(await readFloat(t, edit.dir), weightType);
    const zpData = weightType === 'int8' ? Int8Array.of(r.zeroPoint) : Uint8Array.of(r.zeroPoint);
    hit = {
      q: edit.addInit(makeTensor(edit.unique(`${name}_quantized`), t.dims.map(Number), r.codes)),
      scale: edit.addInit(makeTensor(edit.unique(`${name}_scale`), [], Float32Array.of(r.scale))),
      zp: edit.addInit(makeTensor(edit.unique(`${name}_zero_point`), [], zpData)),
    };
    weights.set(name, hit);
    return hit;
  };
  const activation = (name: string): QuantizedName => {
    let hit = acts.get(name);
    if (hit) return hit;
    hit = { q: edit.unique(`${name}_quantized`), scale: edit.unique(`${name}_scale`), zp: edit.unique(`${name}_zero_point`) };
    out.push(edit.node('DynamicQuantizeLinear', [name], [hit.q, hit.scale, hit.zp], {}, { name: `${name}_QuantizeLinear` }));
    acts.set(name, hit);
    return hit;
  };
  /** integer op output → Cast → Mul by the product of both scales, into `result`. */
  const rescale = (n: NodeProto, intOut: string, a: QuantizedName, w: QuantizedName, result: string): void => {
    const base = `${n.name}_quant`;
    const cast = edit.unique(`${intOut}_cast_output`);
    const scales = edit.unique(`${base}_scales_mul:0`);
    out.push(
      edit.node('Cast', [intOut], [cast], { to: DT.FLOAT }, { name: `${intOut}_cast` }),
      edit.node('Mul', [a.scale, w.scale], [scales], {}, { name: `${base}_scales_mul` }),
      edit.node('Mul', [cast, scales], [result], {}, { name: `${base}_output_scale_mul` }),
    );
  };

  for (const n of edit.nodes) {
    const std = !n.domain || n.domain === 'ai.onnx';
    if (std && n.opType === 'MatMul' && floatInit(n.input[1]) && !edit.inits.has(n.input[0])) {
      const a = activation(n.input[0]);
      const w = await weight(n.input[1]);
      const intOut = edit.unique(`${n.output[0]}_output_quantized`);
      out.push(edit.node('MatMulInteger', [a.q, w.q, a.zp, w.zp], [intOut], {}, { name: `${n.name}_quant` }));
      rescale(n, intOut, a, w, n.output[0]);
      counts.MatMulInteger++;
    } else if (std && n.opType === 'Conv' && floatInit(n.input[1]) && !edit.inits.has(n.input[0]) && (!n.input[2] || floatInit(n.input[2]))) {
      const a = activation(n.input[0]);
      const w = await weight(n.input[1]);
      const intOut = edit.unique(`${n.output[0]}_output_quantized`);
      out.push(create(NodeProtoSchema, { name: edit.unique(`${n.name}_quant`), opType: 'ConvInteger', input: [a.q, w.q, a.zp, w.zp], output: [intOut], attribute: n.attribute }));
      if (!n.input[2]) rescale(n, intOut, a, w, n.output[0]);
      else {
        // The bias is added in float after rescaling, reshaped to broadcast over the channel axis.
        const scaled = edit.unique(`${n.output[0]}_output_scale_mul`);
        rescale(n, intOut, a, w, scaled);
        const rank = edit.inits.get(n.input[1])!.dims.length;
        const shape = edit.addInit(makeTensor(edit.unique(`${n.input[2]}_reshape_shape`), [rank],
          BigInt64Array.from({ length: rank }, (_, i) => (i === 1 ? -1n : 1n))));
        const bias = edit.unique(`${n.input[2]}_reshaped`);
        out.push(
          edit.node('Reshape', [n.input[2], shape], [bias], {}, { name: `${n.input[2]}_reshape` }),
          edit.node('Add', [scaled, bias], [n.output[0]], {}, { name: `${n.name}_bias_add` }),
        );
      }
      counts.ConvInteger++;
    } else if (std && n.opType === 'Gather' && floatInit(n.input[0])) {
      const w = await weight(n.input[0]);
      const q = edit.unique(`${n.output[0]}_quantized`);
      out.push(
        create(NodeProtoSchema, { ...n, input: [w.q, n.input[1]], output: [q] }), // the same node (name, axis) on the codes
        edit.node('DequantizeLinear', [q, w.scale, w.zp], [n.output[0]], {}, { name: `${n.output[0]}_DequantizeLinear` }),
      );
      counts.Gather++;
    } else out.push(n);
  }
  edit.nodes = out;
  return counts;
}
