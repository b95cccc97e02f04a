/**
 * float32 → float16 conversion of a brick (the RKNN NPU's default precision for vision), in the manner
 * of onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` with a block list:
 *
 * - compute ops (MatMul, Gemm, Conv) and data movement run in float16, their weights stored as float16;
 * - ops that need float32 for stability stay float32 (normalizations, Softmax, the Pow/ReduceMean/Sqrt
 *   chain of a decomposed RMSNorm, Exp/Log, Range/CumSum/Cos/Sin of rotary tables, Cast/ConstantOfShape);
 * - an fp32 island grows forward through elementwise ops whose computed float inputs all come from fp32
 *   ops (so `Add(mean_square, eps)` stays fp32) and ends where it meets float16 data;
 * - Cast nodes join the two; graph inputs and outputs stay float32 (Cast at the boundary), so the brick's
 *   interface does not change. Constants are saturated to ±65504 (−1e9 attention masks stay finite).
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type NodeProto, type TensorProto } from 'onnx-buf';
import { DT } from '../../onnx/dtype.js';
import { Graph } from '../../onnx/graph.js';
import { makeTensor } from '../../onnx/builder.js';
import { inferTypes } from '../../onnx/shape-infer.js';
import type { ModelEdit } from '../edit.js';
import { readFloat, toHalfBits } from '../tensors.js';

const COMPUTE = new Set(['MatMul', 'Gemm', 'Conv', 'ConvTranspose']);
const FP16_OK = new Set([
  ...COMPUTE, 'Add', 'Sub', 'Mul', 'Div', 'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Erf', 'Gelu', 'HardSigmoid', 'HardSwish',
  'Neg', 'Abs', 'Clip', 'Max', 'Min', 'Where', 'Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Concat', 'Split',
  'Slice', 'Gather', 'Expand', 'Tile', 'Pad', 'Identity', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'Resize',
  'BatchNormalization', 'Dropout', 'Shape', 'Size',
]);
/** Inputs that take any element type (no cast needed either way). */
const ANY_TYPE_INPUT: Readonly<Record<string, readonly number[]>> = { Shape: [0], Size: [0] };
/** Float inputs that must stay float32 whatever the node runs in. */
const F32_INPUT: Readonly<Record<string, readonly number[]>> = { Resize: [1, 2] };

export interface Fp16Result { readonly fp16Nodes: number; readonly fp32Nodes: number; readonly casts: number }

export async function toFloat16(edit: ModelEdit): Promise<Fp16Result> {
  const graph = new Graph(edit.model.graph!);
  const types = inferTypes(graph);
  const isF32 = (v: string): boolean => (types.get(v)?.dtype ?? (edit.inits.get(v)?.dataType === DT.FLOAT ? 'float32' : undefined)) === 'float32';
  const constants = new Map<string, TensorProto>();
  for (const n of graph.nodes) {
    const t = n.opType === 'Constant' ? n.attribute.find((a) => a.name === 'value')?.t : undefined;
    if (t?.dataType === DT.FLOAT) constants.set(n.output[0], t);
  }
  const isConst = (v: string): boolean => edit.inits.has(v) || constants.has(v);

  // 1. Which nodes run in float16.
  const fp32Value = new Set<string>(); // computed float32 values that stay float32
  const mode = new Map<NodeProto, 'fp16' | 'fp32'>();
  for (const n of graph.nodes) {
    let m: 'fp16' | 'fp32' = 'fp32';
    const sub = n.attribute.some((a) => a.g || a.graphs.length);
    if (!sub && (!n.domain || n.domain === 'ai.onnx') && FP16_OK.has(n.opType)) {
      const computed = n.input.filter((i) => i && isF32(i) && !isConst(i));
      m = !COMPUTE.has(n.opType) && computed.length > 0 && computed.every((i) => fp32Value.has(i)) ? 'fp32' : 'fp16';
    }
    mode.set(n, m);
    if (m === 'fp32') n.output.forEach((o) => { if (o && isF32(o)) fp32Value.add(o); });
  }

  // 2. Rebuild the node list with casts and float16 constants.
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const rename = new Map<string, string>(); // fp16 graph outputs get an internal name, then a Cast to the real one
  const half = new Map<string, string>();   // value → its float16 twin (casts and converted constants)
  const full = new Map<string, string>();   // value → its float32 twin (casts)
  const dtypeNow = (v: string): 'f16' | 'f32' | 'other' => !isF32(v) ? 'other'
    : isConst(v) || graph.inputs.some((i) => i.name === v) || fp32Value.has(v) ? 'f32' : 'f16';
  const out: NodeProto[] = [];
  let casts = 0;
  const cast = (v: string, to: 'f16' | 'f32'): string => {
    const cache = to === 'f16' ? half : full;
    let name = cache.get(v);
    if (name) return name;
    name = edit.unique(`${v}_${to === 'f16' ? 'fp16' : 'fp32'}`);
    out.push(edit.node('Cast', [rename.get(v) ?? v], [name], { to: to === 'f16' ? DT.FLOAT16 : DT.FLOAT }));
    casts++;
    cache.set(v, name);
    return name;
  };
  const halfConstant = async (v: string): Promise<string> => {
    let name = half.get(v);
    if (name) return name;
    const t = edit.inits.get(v) ?? constants.get(v)!;
    name = edit.unique(`${v}_fp16`);
    edit.addInit(makeTensor(name, t.dims.map(Number), toHalfBits(await readFloat(t, edit.dir)), 'float16'));
    half.set(v, name);
    return name;
  };
  let fp16Nodes = 0;
  for (const n of graph.nodes) {
    const m = mode.get(n)!;
    if (m === 'fp16') fp16Nodes++;
    const inputs: string[] = [];
    for (const [i, v] of n.input.entries()) {
      if (!v || !isF32(v) || ANY_TYPE_INPUT[n.opType]?.includes(i)) { inputs.push(rename.get(v) ?? v); continue; }
      const want = m === 'fp16' && !F32_INPUT[n.opType]?.includes(i) ? 'f16' : 'f32';
      const have = dtypeNow(v);
      if (want === have) inputs.push(rename.get(v) ?? v);
      else if (want === 'f32' && rename.has(v)) inputs.push(v); // the boundary Cast already made it float32
      else if (want === 'f16' && isConst(v)) inputs.push(await halfConstant(v));
      else inputs.push(cast(v, want));
    }
    const outputs = n.output.map((o) => {
      if (m === 'fp16' && o && graphOutputs.has(o) && isF32(o)) { const internal = edit.unique(`${o}_fp16`); rename.set(o, internal); return internal; }
      return o;
    });
    const changed = inputs.some((x, i) => x !== n.input[i]) || outputs.some((x, i) => x !== n.output[i]);
    out.push(changed ? create(NodeProtoSchema, { ...n, input: inputs, output: outputs }) : n);
    for (const o of n.output) if (rename.has(o)) { out.push(edit.node('Cast', [rename.get(o)!], [o], { to: DT.FLOAT })); casts++; }
  }
  edit.nodes = out;
  return { fp16Nodes, fp32Nodes: graph.nodes.length - fp16Nodes, casts };
}
