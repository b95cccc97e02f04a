/**
 * A small rewrite buffer over a ModelProto for the format passes: swap nodes, add initializers, then
 * build a new model with only the initializers still read, the opset imports the new ops need, and
 * value_info pruned of values that no longer exist (or of every float value, when types changed).
 * The source proto is never modified; untouched tensors (external ones included) are shared.
 */
import { create } from '@bufbuild/protobuf';
import {
  GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  type GraphProto, type ModelProto, type NodeProto, type TensorProto,
} from 'onnx-buf';
import { makeAttribute, type AttrValue } from '../onnx/builder.js';

export const MS_DOMAIN = 'com.microsoft';

function* subgraphInputs(n: NodeProto): Generator<string> {
  for (const a of n.attribute)
    for (const g of a.g ? [a.g, ...a.graphs] : a.graphs)
      for (const m of g.node) { yield* m.input; yield* subgraphInputs(m); }
}

export class ModelEdit {
  nodes: NodeProto[];
  readonly inits = new Map<string, TensorProto>();
  private readonly names = new Set<string>();
  private readonly graph: GraphProto;

  constructor(readonly model: ModelProto, readonly dir: string) {
    this.graph = model.graph!;
    this.nodes = [...this.graph.node];
    for (const t of this.graph.initializer) { this.inits.set(t.name, t); this.names.add(t.name); }
    for (const v of this.graph.input) this.names.add(v.name);
    for (const n of this.nodes) { n.output.forEach((o) => this.names.add(o)); this.names.add(n.name); }
  }

  get opset(): number {
    return Number(this.model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0);
  }

  unique(base: string): string {
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  addInit(t: TensorProto): string {
    this.names.add(t.name);
    this.inits.set(t.name, t);
    return t.name;
  }

  node(opType: string, inputs: readonly string[], outputs: readonly string[], attrs: Record<string, AttrValue | undefined> = {},
    opts: { name?: string; domain?: string } = {}): NodeProto {
    return create(NodeProtoSchema, {
      name: this.unique(opts.name ?? `${outputs[0]}/${opType}`), opType, domain: opts.domain ?? '', input: [...inputs], output: [...outputs],
      attribute: Object.entries(attrs).filter(([, v]) => v !== undefined).map(([k, v]) => makeAttribute(k, v!)),
    });
  }

  /** Replaces `old` (by identity) with `replacement` nodes in its place, keeping topological order. */
  replace(old: NodeProto, ...replacement: NodeProto[]): void {
    const i = this.nodes.indexOf(old);
    if (i < 0) throw new Error(`node '${old.name}' is not in the graph`);
    this.nodes.splice(i, 1, ...replacement);
  }

  /** Inserts nodes right before `before` (or at the start). */
  insertBefore(before: NodeProto | undefined, ...nodes: NodeProto[]): void {
    const i = before ? this.nodes.indexOf(before) : 0;
    this.nodes.splice(Math.max(0, i), 0, ...nodes);
  }

  build(opts: { dropFloatValueInfo?: boolean; outputs?: GraphProto['output']; inputs?: GraphProto['input'] } = {}): ModelProto {
    const g = this.graph;
    const read = new Set<string>();
    for (const n of this.nodes) { n.input.forEach((i) => read.add(i)); for (const i of subgraphInputs(n)) read.add(i); }
    const outputs = opts.outputs ?? g.output;
    outputs.forEach((o) => read.add(o.name));
    const initializer = [...this.inits.values()].filter((t) => read.has(t.name));
    const kept = new Set(initializer.map((t) => t.name));
    const produced = new Set(this.nodes.flatMap((n) => n.output));
    // Initializers listed as graph inputs (IR < 4 style) go when the initializer goes.
    const input = (opts.inputs ?? g.input).filter((v) => !this.inits.has(v.name) || kept.has(v.name));
    const valueInfo = g.valueInfo.filter((v) => produced.has(v.name) && !(opts.dropFloatValueInfo && isFloatValue(v)));
    const msUsed = this.nodes.some((n) => n.domain === MS_DOMAIN);
    const opsetImport = this.model.opsetImport.filter((o) => o.domain !== MS_DOMAIN || msUsed);
    if (msUsed && !opsetImport.some((o) => o.domain === MS_DOMAIN)) opsetImport.push(create(OperatorSetIdProtoSchema, { domain: MS_DOMAIN, version: 1n }));
    return create(ModelProtoSchema, {
      ...this.model, opsetImport,
      graph: create(GraphProtoSchema, { ...g, node: this.nodes, initializer, input, output: outputs, valueInfo }),
    });
  }
}

const isFloatValue = (v: GraphProto['valueInfo'][number]): boolean => {
  const t = v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : 0;
  return t === 1 || t === 10 || t === 16;
};

export const attrInt = (n: NodeProto, name: string, dflt: number): number => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
};
export const attrFloat = (n: NodeProto, name: string, dflt: number): number => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? a.f : dflt;
};
