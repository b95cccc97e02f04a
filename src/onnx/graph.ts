/**
 * Read-only graph IR over a GraphProto: value types, producer/consumer maps, topological order and
 * dataflow queries. It never edits the proto; passes build new graphs from what it reports.
 */
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from 'onnx-buf';
import { fail } from '../errors.js';
import { dtypeName, type DTypeName } from './dtype.js';
import type { Dim } from './builder.js';
import { InputSet } from './input-set.js';

export interface ValueType {
  readonly dtype?: DTypeName;
  /** Dims: a number, a symbolic name, or null when unknown. `undefined` when even the rank is unknown. */
  readonly shape?: readonly Dim[];
}

export function valueInfoType(v: ValueInfoProto): ValueType {
  const tt = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
  if (!tt) return {};
  return {
    dtype: tt.elemType ? dtypeName(tt.elemType) : undefined,
    shape: tt.shape ? tt.shape.dim.map((d) => d.value.case === 'dimValue' ? Number(d.value.value)
      : d.value.case === 'dimParam' ? d.value.value : null) : undefined,
  };
}

export const tensorType = (t: TensorProto): ValueType => ({ dtype: dtypeName(t.dataType), shape: t.dims.map(Number) });

/** Names a subgraph (If/Loop/Scan body) reads from the enclosing scope. */
function implicitInputs(node: NodeProto): string[] {
  const out: string[] = [];
  const visit = (g: GraphProto, outer: Set<string>): void => {
    const local = new Set<string>([...g.input.map((i) => i.name), ...g.initializer.map((i) => i.name)]);
    for (const n of g.node) {
      for (const i of n.input) if (i && !local.has(i) && !outer.has(i)) out.push(i);
      for (const a of n.attribute) for (const sg of a.g ? [a.g, ...a.graphs] : a.graphs) visit(sg, new Set([...outer, ...local]));
      n.output.forEach((o) => local.add(o));
    }
  };
  for (const a of node.attribute) for (const sg of a.g ? [a.g, ...a.graphs] : a.graphs) visit(sg, new Set());
  return out;
}

export class Graph {
  /** Nodes in a topological order (the proto's order when it already is one). */
  readonly nodes: readonly NodeProto[];
  readonly producer = new Map<string, NodeProto>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly initializers = new Map<string, TensorProto>();
  /** Graph inputs that are not initializers: what a caller must feed. */
  readonly inputs: readonly ValueInfoProto[];
  readonly outputs: readonly ValueInfoProto[];
  readonly types = new Map<string, ValueType>();
  private readonly reads = new Map<NodeProto, readonly string[]>();

  constructor(readonly proto: GraphProto) {
    for (const t of proto.initializer) this.initializers.set(t.name, t);
    this.inputs = proto.input.filter((i) => !this.initializers.has(i.name));
    this.outputs = proto.output;
    for (const n of proto.node) {
      for (const o of n.output) if (o) {
        if (this.producer.has(o)) throw fail('E_ONNX_GRAPH', `value '${o}' is produced by two nodes ('${this.producer.get(o)!.name}' and '${n.name}')`);
        this.producer.set(o, n);
      }
      const reads = [...n.input.filter(Boolean), ...implicitInputs(n)];
      this.reads.set(n, reads);
      for (const i of reads) {
        const list = this.consumers.get(i);
        if (list) { if (!list.includes(n)) list.push(n); } else this.consumers.set(i, [n]);
      }
    }
    this.nodes = this.topoSort();
    for (const t of proto.initializer) this.types.set(t.name, tensorType(t));
    for (const v of [...proto.input, ...proto.valueInfo, ...proto.output]) {
      const t = valueInfoType(v);
      if (t.dtype || t.shape) this.types.set(v.name, mergeTypes(this.types.get(v.name), t));
    }
  }

  /** Every value a node reads, including those its subgraphs capture from this scope. */
  reads_(n: NodeProto): readonly string[] {
    return this.reads.get(n) ?? n.input.filter(Boolean);
  }

  isConstant(value: string): boolean {
    return this.initializers.has(value) || this.producer.get(value)?.opType === 'Constant';
  }

  typeOf(value: string): ValueType {
    return this.types.get(value) ?? {};
  }

  /** Nodes needed to compute `outputs`, not looking past `stopAt`; in topological order. */
  cone(outputs: Iterable<string>, stopAt: ReadonlySet<string> = new Set()): NodeProto[] {
    const seen = new Set<NodeProto>();
    const stack = [...outputs];
    while (stack.length) {
      const v = stack.pop()!;
      if (stopAt.has(v)) continue;
      const n = this.producer.get(v);
      if (!n || seen.has(n)) continue;
      seen.add(n);
      stack.push(...this.reads_(n));
    }
    return this.nodes.filter((n) => seen.has(n));
  }

  /**
   * For every value, the set of `roots` (by index) it depends on. Initializers and Constant outputs
   * depend on nothing. A bitset, so any number of roots works (with-KV exports have 50+ inputs).
   */
  dependencies(roots: readonly string[]): Map<string, InputSet> {
    const deps = new Map<string, InputSet>();
    roots.forEach((r, i) => deps.set(r, InputSet.of(i)));
    for (const n of this.nodes) {
      let m = InputSet.EMPTY;
      for (const i of this.reads_(n)) m = m.union(deps.get(i) ?? InputSet.EMPTY);
      for (const o of n.output) if (o) deps.set(o, m);
    }
    return deps;
  }

  private topoSort(): NodeProto[] {
    const nodes = this.proto.node;
    const produced = new Set<string>([...this.proto.input.map((i) => i.name), ...this.initializers.keys()]);
    if (nodes.every((n) => { const ok = this.reads_(n).every((i) => produced.has(i)); n.output.forEach((o) => produced.add(o)); return ok; }))
      return nodes;
    // Kahn's algorithm, keeping the proto's order among ready nodes.
    const pending = new Map<NodeProto, number>();
    const ready: NodeProto[] = [];
    for (const n of nodes) {
      const count = new Set(this.reads_(n).filter((i) => this.producer.has(i))).size;
      pending.set(n, count);
      if (count === 0) ready.push(n);
    }
    const order: NodeProto[] = [];
    while (ready.length) {
      const n = ready.shift()!;
      order.push(n);
      const next = new Set<NodeProto>();
      for (const o of n.output) for (const c of this.consumers.get(o) ?? []) next.add(c);
      for (const c of next) {
        const left = pending.get(c)! - new Set(this.reads_(c).filter((i) => n.output.includes(i))).size;
        pending.set(c, left);
        if (left === 0) ready.push(c);
      }
    }
    if (order.length !== nodes.length)
      throw fail('E_ONNX_GRAPH', `graph '${this.proto.name}' has a cycle or reads values nothing produces (${nodes.length - order.length} nodes unreachable)`);
    return order;
  }
}

export function mergeTypes(a: ValueType | undefined, b: ValueType): ValueType {
  if (!a) return b;
  return { dtype: a.dtype ?? b.dtype, shape: a.shape ?? b.shape };
}

export const numel = (shape: readonly Dim[]): number | undefined =>
  shape.every((d) => typeof d === 'number') ? (shape as number[]).reduce((x, y) => x * y, 1) : undefined;
