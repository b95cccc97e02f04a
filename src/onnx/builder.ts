/**
 * A small graph builder: fixtures and later passes use it to write valid ONNX without hand-assembling
 * protobuf messages. Node and value names follow the PyTorch exporter's scoping (`/scope/Op_3`), so
 * graphs built here look like exported ones to the partitioner.
 */
import { create } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType as AT, AttributeProtoSchema, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema,
  OperatorSetIdProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema, TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema, TypeProto_TensorSchema, TypeProtoSchema, ValueInfoProtoSchema,
  type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto,
} from 'onnx-buf';
import { DT, dtypeFromName, type DTypeName } from './dtype.js';

export type Dim = number | string | null;
export type Shape = readonly Dim[];

/** Marks an attribute value as float even when it is a whole number (`alpha: float(1)`). */
export class FloatAttr { constructor(readonly value: number | readonly number[]) {} }
export const float = (v: number | readonly number[]): FloatAttr => new FloatAttr(v);

export type AttrValue = number | bigint | string | readonly number[] | readonly string[] | FloatAttr | TensorProto | GraphProto;

export function makeValueInfo(name: string, dtype: DTypeName | DT, shape?: Shape): ValueInfoProto {
  const elemType = typeof dtype === 'number' ? dtype : dtypeFromName(dtype);
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: shape && create(TensorShapeProtoSchema, {
            dim: shape.map((d) => create(TensorShapeProto_DimensionSchema,
              typeof d === 'number' ? { value: { case: 'dimValue', value: BigInt(d) } }
                : typeof d === 'string' ? { value: { case: 'dimParam', value: d } } : {})),
          }),
        }),
      },
    }),
  });
}

type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Uint16Array | Int16Array;

/** A tensor with raw little-endian data. `dtype` overrides what the typed array implies (e.g. float16 bits in a Uint16Array). */
export function makeTensor(name: string, dims: readonly number[], data: TypedData, dtype?: DTypeName): TensorProto {
  const implied: DTypeName = data instanceof Float32Array ? 'float32' : data instanceof Float64Array ? 'float64'
    : data instanceof Int32Array ? 'int32' : data instanceof BigInt64Array ? 'int64' : data instanceof Int8Array ? 'int8'
      : data instanceof Uint16Array ? 'uint16' : data instanceof Int16Array ? 'int16' : 'uint8';
  return create(TensorProtoSchema, {
    name,
    dims: dims.map(BigInt),
    dataType: dtypeFromName(dtype ?? implied),
    rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer),
  });
}

export function makeAttribute(name: string, v: AttrValue): AttributeProto {
  const a = (init: Parameters<typeof create<typeof AttributeProtoSchema>>[1]) => create(AttributeProtoSchema, { name, ...init });
  if (v instanceof FloatAttr)
    return Array.isArray(v.value) ? a({ type: AT.FLOATS, floats: [...v.value] }) : a({ type: AT.FLOAT, f: v.value as number });
  if (typeof v === 'bigint') return a({ type: AT.INT, i: v });
  if (typeof v === 'number') return Number.isInteger(v) ? a({ type: AT.INT, i: BigInt(v) }) : a({ type: AT.FLOAT, f: v });
  if (typeof v === 'string') return a({ type: AT.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) return a({ type: AT.STRINGS, strings: v.map((s) => new TextEncoder().encode(s as string)) });
    return (v as number[]).every(Number.isInteger) ? a({ type: AT.INTS, ints: (v as number[]).map(BigInt) }) : a({ type: AT.FLOATS, floats: [...(v as number[])] });
  }
  const m = v as TensorProto | GraphProto;
  if (m.$typeName === 'onnx.TensorProto') return a({ type: AT.TENSOR, t: m });
  return a({ type: AT.GRAPH, g: m as GraphProto });
}

export interface OpOptions {
  readonly name?: string;
  readonly outputs?: number | readonly string[];
  readonly domain?: string;
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly valueInfo: ValueInfoProto[] = [];
  private readonly scopes: string[] = [];
  private readonly counters = new Map<string, number>();
  private readonly names = new Set<string>();

  constructor(readonly name = 'main_graph') {}

  input(name: string, dtype: DTypeName, shape: Shape): string {
    this.inputs.push(makeValueInfo(name, dtype, shape));
    this.names.add(name);
    return name;
  }

  output(name: string, dtype: DTypeName, shape?: Shape): string {
    this.outputs.push(makeValueInfo(name, dtype, shape));
    return name;
  }

  /** Adds an initializer; the name is scoped unless it already contains '/' or ':' (exporter-style names). */
  init(name: string, dims: readonly number[], data: TypedData, dtype?: DTypeName): string {
    const full = this.unique(/[/:]/.test(name) ? name : this.scoped(name).replace(/^\//, '').replaceAll('/', '.'));
    this.initializers.push(makeTensor(full, dims, data, dtype));
    return full;
  }

  /** A scalar or 1-D constant initializer (shape helpers: axes, reshape targets). */
  const(values: readonly number[] | number, dtype: 'int64' | 'float32' = 'int64', dims?: readonly number[]): string {
    const arr = typeof values === 'number' ? [values] : values;
    const data = dtype === 'int64' ? BigInt64Array.from(arr.map((v) => BigInt(v))) : Float32Array.from(arr);
    return this.init('onnx::Constant_' + this.nodes.length, dims ?? (typeof values === 'number' ? [] : [arr.length]), data);
  }

  scope<T>(name: string, body: () => T): T {
    this.scopes.push(name);
    try { return body(); } finally { this.scopes.pop(); }
  }

  /** Adds a node; returns its single output name (or the first of several, see `opN`). */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}, opts: OpOptions = {}): string {
    return this.opN(opType, inputs, attrs, { ...opts, outputs: opts.outputs ?? 1 })[0];
  }

  opN(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {}, opts: OpOptions = {}): string[] {
    const nodeName = this.unique(opts.name ?? this.scoped(`${opType}`));
    const outs = typeof opts.outputs === 'object' ? [...opts.outputs]
      : Array.from({ length: opts.outputs ?? 1 }, (_, i) => this.unique(`${nodeName}_output_${i}`));
    this.nodes.push(create(NodeProtoSchema, {
      name: nodeName, opType, domain: opts.domain ?? '', input: [...inputs], output: outs,
      attribute: Object.entries(attrs).filter(([, v]) => v !== undefined).map(([k, v]) => makeAttribute(k, v!)),
    }));
    outs.forEach((o) => this.names.add(o));
    return outs;
  }

  /** Records an intermediate's type, as exporters do in `value_info`. */
  annotate(name: string, dtype: DTypeName, shape: Shape): string {
    this.valueInfo.push(makeValueInfo(name, dtype, shape));
    return name;
  }

  graph(): GraphProto {
    return create(GraphProtoSchema, {
      name: this.name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs,
      valueInfo: this.valueInfo,
    });
  }

  model(opts: { opset?: number; msOpset?: number; producer?: string; metadata?: Record<string, string> } = {}): ModelProto {
    const opsetImport = [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opts.opset ?? 17) })];
    if (opts.msOpset) opsetImport.push(create(OperatorSetIdProtoSchema, { domain: 'com.microsoft', version: BigInt(opts.msOpset) }));
    return create(ModelProtoSchema, {
      irVersion: 8n, producerName: opts.producer ?? 'nanomind', producerVersion: '0.1.0', opsetImport, graph: this.graph(),
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
    });
  }

  private scoped(leaf: string): string {
    return `/${[...this.scopes, leaf].join('/')}`;
  }

  private unique(base: string): string {
    if (!this.names.has(base)) { this.names.add(base); return base; }
    const n = (this.counters.get(base) ?? 0) + 1;
    this.counters.set(base, n);
    return this.unique(`${base}_${n}`);
  }
}
