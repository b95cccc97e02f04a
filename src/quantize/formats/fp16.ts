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
 * - `io: 'float16'` instead makes float graph inputs and outputs float16 (`keep_io_types=False`, the
 *   interface of the hub's `_fp16` LLM exports: float16 past_key_values, present, logits); float32 ops
 *   at the boundary get the Casts instead. The caller passes `result.io` to `ModelEdit.build`.
 * - com.microsoft MatMulNBits runs in float16 too (activation, scales and bias float16), as
 *   convert_float_to_float16 leaves it when it converts a 4-bit model (transformers.js' q4f16).
 */
import { clone, create } from '@bufbuild/protobuf';
import { NodeProtoSchema, ValueInfoProtoSchema, type NodeProto, type TensorProto, type TypeProto_Tensor, type ValueInfoProto } from 'onnx-buf';
import { DT } from '../../onnx/dtype.js';
import { Graph } from '../../onnx/graph.js';
import { makeTensor } from '../../onnx/builder.js';
import { inferTypes } from '../../onnx/shape-infer.js';
import { MS_DOMAIN, type ModelEdit } from '../edit.js';
import { readFloat, toHalfBits } from '../tensors.js';

const COMPUTE = new Set(['MatMul', 'Gemm', 'Conv', 'ConvTranspose']);
const FP16_OK = new Set([
  ...COMPUTE, 'Add', 'Sub', 'Mul', 'Div', 'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Erf', 'Gelu', 'HardSigmoid', 'HardSwish',
  'Neg', 'Abs', 'Clip', 'Max', 'Min', 'Where', 'Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Concat', 'Split',
  'Slice', 'Gather', 'Expand', 'Tile', 'Pad', 'Identity', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'Resize',
  'BatchNormalization', 'Dropout', 'Shape', 'Size',
]);
/** com.microsoft compute ops that take float16 (their float inputs: activation, scales, bias). */
const MS_FP16_OK = new Set(['MatMulNBits']);
/** Inputs that take any element type (no cast needed either way). */
const ANY_TYPE_INPUT: Readonly<Record<string, readonly number[]>> = { Shape: [0], Size: [0] };
/** Float inputs that must stay float32 whatever the node runs in. */
const F32_INPUT: Readonly<Record<string, readonly number[]>> = { Resize: [1, 2] };

export interface Fp16Options {
  /** Element type of float graph inputs/outputs: 'float32' (default, interface unchanged) or 'float16'. */
  readonly io?: 'float32' | 'float16';
}

export interface Fp16Result {
  readonly fp16Nodes: number;
  readonly fp32Nodes: number;
  readonly casts: number;
  /** The graph inputs/outputs to build with (float16 ones retyped) when `io` is 'float16'. */
  readonly io?: { readonly inputs: ValueInfoProto[]; readonly outputs: ValueInfoProto[] };
}

export async function toFloat16(edit: ModelEdit, opts: Fp16Options = {}): Promise<Fp16Result> {
  const ioHalf = opts.io === 'float16';
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
    const ok = !n.domain || n.domain === 'ai.onnx' ? FP16_OK.has(n.opType) : n.domain === MS_DOMAIN && MS_FP16_OK.has(n.opType);
    // An input whose element type inference could not tell would get no Cast: such a node stays float32,
    // and so does everything downstream that only it feeds (its outputs are then float32 values).
    const unknown = n.input.some((i) => i && !types.get(i)?.dtype && !edit.inits.has(i) && !constants.has(i));
    if (!sub && ok && !unknown) {
      const computed = n.input.filter((i) => i && isF32(i) && !isConst(i));
      const compute = COMPUTE.has(n.opType) || n.domain === MS_DOMAIN; // every com.microsoft op allowed here is a MatMul
      m = !compute && computed.length > 0 && computed.every((i) => fp32Value.has(i)) ? 'fp32' : 'fp16';
    }
    mode.set(n, m);
    if (m === 'fp32') n.output.forEach((o) => { if (o && (isF32(o) || (unknown && !types.get(o)?.dtype))) fp32Value.add(o); });
  }

  // 2. Rebuild the node list with casts and float16 constants.
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  // A graph output produced in the other precision than the interface's gets an internal name, then a
  // Cast to the real one (fp16 producer with float32 I/O, fp32 producer with float16 I/O).
  const rename = new Map<string, string>();
  const graphInputs = new Set(graph.inputs.map((i) => i.name));
  const half = new Map<string, string>();   // value → its float16 twin (casts and converted constants)
  const full = new Map<string, string>();   // value → its float32 twin (casts)
  /** The precision a value has now (for a renamed graph output: that of its internal name). */
  const dtypeNow = (v: string): 'f16' | 'f32' | 'other' => !isF32(v) ? 'other'
    : graphInputs.has(v) ? (ioHalf ? 'f16' : 'f32')
    : isConst(v) || fp32Value.has(v) ? 'f32' : 'f16';
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
      else if (rename.has(v)) inputs.push(v); // the boundary Cast already made it the other precision
      else if (want === 'f16' && isConst(v)) inputs.push(await halfConstant(v));
      else inputs.push(cast(v, want));
    }
    const outputs = n.output.map((o) => {
      if (o && graphOutputs.has(o) && isF32(o) && (m === 'fp16') !== ioHalf) {
        const internal = edit.unique(`${o}_${m === 'fp16' ? 'fp16' : 'fp32'}`);
        rename.set(o, internal);
        return internal;
      }
      return o;
    });
    const changed = inputs.some((x, i) => x !== n.input[i]) || outputs.some((x, i) => x !== n.output[i]);
    out.push(changed ? create(NodeProtoSchema, { ...n, input: inputs, output: outputs }) : n);
    for (const o of n.output) if (rename.has(o)) { out.push(edit.node('Cast', [rename.get(o)!], [o], { to: ioHalf ? DT.FLOAT16 : DT.FLOAT })); casts++; }
  }
  edit.nodes = out;
  const io = ioHalf ? {
    inputs: graph.proto.input.map((v) => (graph.initializers.has(v.name) ? v : halfIo(v))), outputs: graph.outputs.map(halfIo),
  } : undefined;
  return { fp16Nodes, fp32Nodes: graph.nodes.length - fp16Nodes, casts, io };
}

/** A float32 graph input/output retyped float16 (shape kept); others unchanged. */
function halfIo(v: ValueInfoProto): ValueInfoProto {
  const t = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  if (!t || t.elemType !== DT.FLOAT) return v;
  const c = clone(ValueInfoProtoSchema, v);
  (c.type!.value.value as TypeProto_Tensor).elemType = DT.FLOAT16;
  return c;
}
