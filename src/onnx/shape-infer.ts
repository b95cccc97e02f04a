/**
 * Symbolic shape and dtype inference over a `Graph`, good enough to give every brick boundary a dtype
 * and a shape in graphs written by PyTorch's exporter and by our builder.
 *
 * Besides types, it tracks the *contents* of small tensors (≤ 64 elements) element by element — a
 * number, a symbolic dim or unknown — so that exporter shape arithmetic (Shape → Gather → Unsqueeze →
 * Concat → Reshape, Where/Equal/ConstantOfShape guards, Range over a sequence length) resolves to
 * `['batch_size', 'sequence_length', 64]` rather than to unknown dims. Unknown ops leave their outputs
 * unknown; inference never throws for a graph it merely does not understand.
 */
import { AttributeProto_AttributeType as AT, type AttributeProto, type GraphProto, type NodeProto, type TensorProto } from 'onnx-buf';
import type { Dim } from './builder.js';
import { bfloat16ToFloat, DT, halfToFloat, typedView, type DTypeName } from './dtype.js';
import { Graph, valueInfoType, type ValueType } from './graph.js';
import { externalRef, inlineBytes } from './model-io.js';
import {
  bcastDim, bcastShapes, dimAdd, dimDiv, dimEq, dimMul, dimProd, dimSub, dimSubst, dtypeOfEnum, intsOf, isConcrete, MAX_VAL,
  normAxis, numelOf, RULES, type Ctx, type Out, type Rule, type Val,
} from './shape-infer-ops.js';

export { dimAdd, dimDiv, dimMul, dimSub } from './shape-infer-ops.js';

export interface InferOptions {
  /** Replaces the declared shapes of graph inputs (e.g. concrete `[1, 3, 32, 32]` for FLOP counting). */
  readonly inputShapes?: Record<string, readonly Dim[]>;
  /** Bytes of an initializer stored as external data; without it such initializers have unknown contents. */
  readonly readInitializer?: (t: TensorProto) => Uint8Array | undefined;
}

/** Dtype and shape for every value in the graph (inputs, initializers, node outputs). Pure: `graph` is not changed. */
export function inferTypes(graph: Graph, opts: InferOptions = {}): Map<string, ValueType> {
  const bind = new Map<string, Dim>();
  for (const v of graph.inputs) {
    const given = opts.inputShapes?.[v.name], declared = valueInfoType(v).shape;
    if (given && declared?.length === given.length)
      declared.forEach((d, i) => { if (typeof d === 'string' && given[i] !== null && !bind.has(d)) bind.set(d, given[i]); });
  }
  const scope = new Scope(graph, undefined, opts);
  const subst = (t: ValueType): ValueType => (bind.size && t.shape ? { ...t, shape: t.shape.map((d) => dimSubst(d, bind)) } : t);
  for (const [name, t] of graph.types) scope.types.set(name, subst(t));
  for (const v of graph.inputs) {
    const given = opts.inputShapes?.[v.name];
    if (given) scope.types.set(v.name, { dtype: scope.types.get(v.name)?.dtype, shape: [...given] });
  }
  scope.run();
  return scope.types;
}

// ---------------------------------------------------------------- tensor contents

function decodeTensor(t: TensorProto, read?: (t: TensorProto) => Uint8Array | undefined): Val | undefined {
  const shape = t.dims.map(Number);
  const n = numelOf(shape);
  if (n > MAX_VAL || t.dataType === DT.STRING) return undefined;
  let bytes: Uint8Array | undefined;
  try { bytes = externalRef(t) ? read?.(t) : inlineBytes(t); } catch { return undefined; }
  if (!bytes) return undefined;
  const conv: ((x: number) => number) | undefined = t.dataType === DT.FLOAT16 ? halfToFloat
    : t.dataType === DT.BFLOAT16 ? bfloat16ToFloat
      : [DT.FLOAT, DT.DOUBLE, DT.INT8, DT.UINT8, DT.INT16, DT.UINT16, DT.INT32, DT.UINT32, DT.INT64, DT.UINT64, DT.BOOL]
        .includes(t.dataType) ? (x) => x : undefined;
  if (!conv) return undefined;
  // A fresh copy: rawData may be a misaligned Node Buffer view, whose slice() does not copy.
  const arr = typedView(t.dataType, new Uint8Array(bytes));
  if (arr.length < n) return undefined;
  const data: Dim[] = [];
  for (let i = 0; i < n; i++) data.push(conv(Number(arr[i])));
  return { shape, data };
}

function attrOf(node: NodeProto, name: string): AttributeProto | undefined {
  for (const a of node.attribute) if (a.name === name) return a;
  return undefined;
}

// ---------------------------------------------------------------- driver

class Scope {
  readonly types = new Map<string, ValueType>();
  private readonly vals = new Map<string, Val | null>();

  constructor(readonly graph: Graph, readonly parent: Scope | undefined, readonly opts: InferOptions) {}

  type(name: string): ValueType {
    return this.types.get(name) ?? this.parent?.type(name) ?? {};
  }

  val(name: string): Val | undefined {
    const v = this.vals.get(name);
    if (v !== undefined) return v ?? undefined;
    const init = this.graph.initializers.get(name);
    if (init) {
      const d = decodeTensor(init, this.opts.readInitializer);
      this.vals.set(name, d ?? null);
      return d;
    }
    return this.types.has(name) || this.graph.producer.has(name) ? undefined : this.parent?.val(name);
  }

  run(): void {
    for (const node of this.graph.nodes) {
      let outs: readonly (Out | undefined)[] = [];
      try {
        const r = node.opType === 'If' ? this.ifRule(node) : (LOCAL[node.opType] ?? RULES[node.opType])?.(this.ctx(node));
        outs = r === undefined ? [] : Array.isArray(r) ? r : [r as Out];
      } catch {
        outs = []; // a rule that trips over a malformed node leaves its outputs unknown
      }
      node.output.forEach((o, i) => { if (o) this.set(o, outs[i]); });
    }
  }

  private set(name: string, out: Out | undefined): void {
    const old = this.types.get(name);
    const shape = out?.value?.shape ?? out?.shape;
    let s = old?.shape;
    if (!s) s = shape && [...shape];
    else if (shape && shape.length === s.length) s = s.map((d, i) => (d === null ? shape[i] : d));
    this.types.set(name, { dtype: old?.dtype ?? out?.dtype, shape: s });
    const v = out?.value;
    this.vals.set(name, v && isConcrete(s) && s.length === v.shape.length && s.every((d, i) => d === v.shape[i]) ? v : null);
  }

  private ctx(node: NodeProto): Ctx & { readonly scope: Scope } {
    const inp = node.input;
    return {
      node, scope: this, n: inp.length,
      has: (i) => !!inp[i],
      t: (i) => (inp[i] ? this.type(inp[i]) : {}),
      v: (i) => (inp[i] ? this.val(inp[i]) : undefined),
      attr: (name) => attrOf(node, name),
      int: (name, dflt) => { const a = attrOf(node, name); return a?.type === AT.INT ? Number(a.i) : dflt; },
      ints: (name) => { const a = attrOf(node, name); return a?.type === AT.INTS ? a.ints.map(Number) : undefined; },
      float: (name, dflt) => { const a = attrOf(node, name); return a?.type === AT.FLOAT ? a.f : dflt; },
      str: (name, dflt) => { const a = attrOf(node, name); return a?.type === AT.STRING ? new TextDecoder().decode(a.s) : dflt; },
    };
  }

  /** Infers a subgraph in a child scope; returns its output types. */
  sub(g: GraphProto): ValueType[] | undefined {
    let graph: Graph;
    try { graph = new Graph(g); } catch { return undefined; }
    const child = new Scope(graph, this, this.opts);
    for (const [k, t] of graph.types) child.types.set(k, t);
    child.run();
    return g.output.map((o) => child.types.get(o.name) ?? this.type(o.name));
  }

  private ifRule(node: NodeProto): Out[] {
    const cond = this.val(node.input[0])?.data[0];
    const branch = (name: string) => { const g = attrOf(node, name)?.g; return g ? this.sub(g) : undefined; };
    if (typeof cond === 'number') return (branch(cond ? 'then_branch' : 'else_branch') ?? []).map((t) => ({ ...t }));
    const a = branch('then_branch'), b = branch('else_branch');
    if (!a || !b) return [];
    return a.map((ta, i) => {
      const tb = b[i] ?? {};
      const dtype = ta.dtype === tb.dtype ? ta.dtype : ta.dtype && tb.dtype ? undefined : ta.dtype ?? tb.dtype;
      const shape = ta.shape && tb.shape && ta.shape.length === tb.shape.length
        ? ta.shape.map((d, j) => (dimEq(d, tb.shape![j]) ? d : null)) : undefined;
      return { dtype, shape };
    });
  }
}

// ---------------------------------------------------------------- ops that make values or move data

const scopeOf = (c: Ctx): Scope => (c as Ctx & { scope: Scope }).scope;
const rankOnly = (s: readonly Dim[] | undefined): Dim[] | undefined =>
  s?.length === 1 && typeof s[0] === 'number' ? Array(s[0]).fill(null) : undefined;

/** Gathers elements of a value along `axis` (general N-D). */
function gatherVal(x: Val, idx: readonly number[], axis: number, outShape: readonly number[]): Val | undefined {
  const outer = numelOf(x.shape.slice(0, axis)), inner = numelOf(x.shape.slice(axis + 1)), n = x.shape[axis];
  const data: Dim[] = [];
  for (let o = 0; o < outer; o++) for (const i of idx) {
    const j = i < 0 ? i + n : i;
    if (j < 0 || j >= n) return undefined;
    for (let k = 0; k < inner; k++) data.push(x.data[(o * n + j) * inner + k]);
  }
  return { shape: outShape, data };
}

/** Elements of a slice along one axis, or undefined when a bound is not a number. */
function sliceIdx(n: number, st: Dim, en: Dim, step: Dim): number[] | undefined {
  if (typeof st !== 'number' || typeof en !== 'number' || typeof step !== 'number' || step === 0) return undefined;
  const out: number[] = [];
  if (step > 0) {
    const s = st < 0 ? Math.max(0, st + n) : Math.min(st, n), e = en < 0 ? Math.max(0, en + n) : Math.min(en, n);
    for (let i = s; i < e; i += step) out.push(i);
  } else {
    const s = st < 0 ? Math.max(-1, st + n) : Math.min(st, n - 1), e = en < 0 ? Math.max(-1, en + n) : Math.min(en, n - 1);
    for (let i = s; i > e; i += step) out.push(i);
  }
  return out;
}

const BIG = 2 ** 31 - 1;
function sliceDim(d: Dim, st: Dim, en: Dim, step: Dim): Dim {
  if (typeof d === 'number') { const r = sliceIdx(d, st, en, step); if (r) return r.length; }
  if (step === -1 && st === -1 && typeof en === 'number' && en <= -BIG) return d; // a full reversal (torch.flip)
  if (step !== 1) return null;
  if (st === 0 && (typeof en === 'number' ? en >= BIG : dimEq(en, d))) return d;
  // A symbolic end: assume it lies inside the dim (x[:, :seq_len] on a larger buffer).
  if (typeof en === 'string' && typeof st === 'number' && st >= 0) return dimSub(en, st);
  return null;
}

const LOCAL: Record<string, Rule> = {
  Constant: (c) => {
    const a = c.node.attribute[0];
    if (!a) return undefined;
    if (a.t) { const t = a.t; return { dtype: dtypeOfEnum(t.dataType), shape: t.dims.map(Number), value: decodeTensor(t, scopeOf(c).opts.readInitializer) }; }
    const scalar = (v: number, dtype: DTypeName): Out => ({ dtype, shape: [], value: { shape: [], data: [v] } });
    const list = (v: number[], dtype: DTypeName): Out => ({ dtype, shape: [v.length], value: v.length <= MAX_VAL ? { shape: [v.length], data: v } : undefined });
    switch (a.name) {
      case 'value_int': return scalar(Number(a.i), 'int64');
      case 'value_float': return scalar(a.f, 'float32');
      case 'value_ints': return list(a.ints.map(Number), 'int64');
      case 'value_floats': return list([...a.floats], 'float32');
      case 'value_string': return { dtype: 'string', shape: [] };
      case 'value_strings': return { dtype: 'string', shape: [a.strings.length] };
      default: return undefined;
    }
  },
  ConstantOfShape: (c) => {
    const t = c.attr('value')?.t;
    const dtype = t ? dtypeOfEnum(t.dataType) : 'float32';
    const fill = t ? decodeTensor(t, scopeOf(c).opts.readInitializer)?.data[0] ?? null : 0;
    const sv = c.v(0)?.data;
    if (!sv) return { dtype, shape: rankOnly(c.t(0).shape) };
    const value = isConcrete(sv) && numelOf(sv) <= MAX_VAL ? { shape: sv, data: Array(numelOf(sv)).fill(fill) } : undefined;
    return { dtype, shape: sv, value };
  },
  Shape: (c) => {
    const s = c.t(0).shape;
    if (!s) return { dtype: 'int64', shape: [null] };
    const r = s.length, clamp = (x: number) => Math.min(r, Math.max(0, x < 0 ? x + r : x));
    const dims = s.slice(clamp(c.int('start', 0)), clamp(c.int('end', r)));
    return { dtype: 'int64', shape: [dims.length], value: { shape: [dims.length], data: dims } };
  },
  Size: (c) => {
    const s = c.t(0).shape;
    return { dtype: 'int64', shape: [], value: s ? { shape: [], data: [dimProd(s)] } : undefined };
  },
  Range: (c) => {
    const dtype = c.t(0).dtype ?? c.t(1).dtype;
    const [st, lim, dl] = [0, 1, 2].map((i) => c.v(i)?.data[0] ?? null);
    let len: Dim = null;
    if (typeof st === 'number' && typeof lim === 'number' && typeof dl === 'number' && dl !== 0) len = Math.max(0, Math.ceil((lim - st) / dl));
    else if (dl === 1 || dl === -1) len = dl === 1 ? dimSub(lim, st) : dimSub(st, lim);
    else if (typeof dl === 'number') len = dimDiv(dimSub(lim, st), dl);
    const value = typeof len === 'number' && len <= MAX_VAL && typeof dl === 'number' && st !== null
      ? { shape: [len], data: Array.from({ length: len }, (_, i) => dimAdd(st, i * dl)) } : undefined;
    return { dtype, shape: [len], value };
  },
  NonZero: (c) => ({ dtype: 'int64', shape: [c.t(0).shape?.length ?? null, null] }),
  // Data-dependent length along `axis` (flattened without one); the element type is the input's.
  Compress: (c) => {
    const s = c.t(0).shape, axis = c.int('axis', Number.NaN);
    if (!s || Number.isNaN(axis)) return { dtype: c.t(0).dtype, shape: Number.isNaN(axis) ? [null] : undefined };
    const a = axis < 0 ? axis + s.length : axis;
    return { dtype: c.t(0).dtype, shape: s.map((d, i) => (i === a ? null : d)) };
  },
  EyeLike: (c) => ({ dtype: dtypeOfEnum(c.int('dtype', -1)) ?? c.t(0).dtype, shape: c.t(0).shape }),
  OneHot: (c) => {
    const s = c.t(0).shape, depth = c.v(1)?.data[0] ?? null;
    if (!s) return { dtype: c.t(2).dtype };
    const shape = [...s], ax = normAxis(c.int('axis', -1), s.length + 1);
    shape.splice(ax, 0, typeof depth === 'number' ? Math.trunc(depth) : depth);
    return { dtype: c.t(2).dtype, shape };
  },
  Reshape: (c) => {
    const x = c.t(0).shape, dtype = c.t(0).dtype, allowzero = c.int('allowzero', 0);
    const target = c.has(1) ? c.v(1)?.data : c.ints('shape');
    if (!target) return { dtype, shape: rankOnly(c.t(1).shape) };
    const out: Dim[] = target.map((d, i) => (d === 0 && !allowzero ? x?.[i] ?? null : typeof d === 'number' && d < -1 ? null : d));
    const neg = out.indexOf(-1);
    if (neg >= 0) {
      // Dims copied by a 0 cancel out whatever they are; so do equal dims on both sides.
      const copied = new Set(target.flatMap((d, i) => (d === 0 && !allowzero ? [i] : [])));
      const rest = x ? x.filter((_, i) => !copied.has(i)) : [null], known = out.filter((_, i) => i !== neg && !copied.has(i));
      for (let k = 0; k < known.length; k++) {
        const j = rest.findIndex((d) => dimEq(d, known[k]));
        if (j >= 0) { rest.splice(j, 1); known.splice(k--, 1); }
      }
      out[neg] = rest.includes(null) || known.includes(null) ? null : dimDiv(dimProd(rest), dimProd(known));
    }
    const v = c.v(0);
    return { dtype, shape: out, value: v && isConcrete(out) ? { shape: out, data: v.data } : undefined };
  },
  Flatten: (c) => {
    const x = c.t(0).shape;
    if (!x) return { dtype: c.t(0).dtype };
    const a = normAxis(c.int('axis', 1), x.length), v = c.v(0);
    const shape = [dimProd(x.slice(0, a)), dimProd(x.slice(a))];
    return { dtype: c.t(0).dtype, shape, value: v && isConcrete(shape) ? { shape, data: v.data } : undefined };
  },
  Transpose: (c) => {
    const x = c.t(0).shape, perm = c.ints('perm') ?? x?.map((_, i) => x.length - 1 - i);
    return { dtype: c.t(0).dtype, shape: x && perm && perm.map((p) => x[p] ?? null) };
  },
  Squeeze: (c) => {
    const x = c.t(0).shape, axes = intsOf(c, 'axes', 1), v = c.v(0), dtype = c.t(0).dtype;
    if (!x || axes?.includes(null) || (c.has(1) && !axes)) return { dtype };
    let shape: Dim[];
    if (axes?.length) { const set = new Set(axes.map((a) => normAxis(a as number, x.length))); shape = x.filter((_, i) => !set.has(i)); }
    else if (x.includes(null)) return { dtype };
    else shape = x.filter((d) => d !== 1);
    return { dtype, shape, value: v && isConcrete(shape) ? { shape, data: v.data } : undefined };
  },
  Unsqueeze: (c) => {
    const x = c.t(0).shape, axes = intsOf(c, 'axes', 1), v = c.v(0), dtype = c.t(0).dtype;
    if (!x || !axes || axes.includes(null)) return { dtype };
    const r = x.length + axes.length, set = new Set(axes.map((a) => normAxis(a as number, r)));
    const shape: Dim[] = [];
    for (let i = 0, j = 0; i < r; i++) shape.push(set.has(i) ? 1 : x[j++]);
    return { dtype, shape, value: v && isConcrete(shape) ? { shape, data: v.data } : undefined };
  },
  Concat: (c) => {
    const idx = [...Array(c.n).keys()].filter((i) => c.has(i));
    const shapes = idx.map((i) => c.t(i).shape), dtype = idx.map((i) => c.t(i).dtype).find(Boolean);
    const known = shapes.find(Boolean);
    if (!known) return { dtype };
    const ax = normAxis(c.int('axis', 0), known.length);
    const shape = known.map((_, d) => {
      if (d === ax) return shapes.reduce<Dim>((acc, s) => (s ? dimAdd(acc, s[d]) : null), 0);
      let m: Dim = null;
      for (const s of shapes) if (s) m = m === null ? s[d] : typeof m === 'string' && typeof s[d] === 'number' ? s[d] : m;
      return m;
    });
    const vals = idx.map((i) => c.v(i));
    let value: Val | undefined;
    if (vals.every(Boolean) && isConcrete(shape) && numelOf(shape) <= MAX_VAL) {
      const outer = numelOf(shape.slice(0, ax)), data: Dim[] = [];
      for (let o = 0; o < outer; o++) for (const v of vals) { const n = numelOf(v!.shape.slice(ax)); data.push(...v!.data.slice(o * n, (o + 1) * n)); }
      value = { shape, data };
    }
    return { dtype, shape, value };
  },
  Split: (c) => {
    const x = c.t(0).shape, dtype = c.t(0).dtype, k = c.node.output.length;
    if (!x) return Array(k).fill({ dtype });
    const ax = normAxis(c.int('axis', 0), x.length), d = x[ax];
    let sizes: Dim[] | undefined = intsOf(c, 'split', 1);
    if (!sizes && c.has(1)) sizes = Array(k).fill(null);
    if (!sizes) {
      const parts = c.int('num_outputs', k);
      const each = typeof d === 'number' ? Math.ceil(d / parts) : dimDiv(d, parts);
      sizes = Array.from({ length: k }, (_, i) => (typeof d === 'number' && typeof each === 'number' ? Math.max(0, Math.min(each, d - i * each)) : each));
    }
    return sizes.map((s) => ({ dtype, shape: x.map((dd, i) => (i === ax ? s : dd)) }));
  },
  Slice: (c) => {
    const x = c.t(0).shape, dtype = c.t(0).dtype;
    if (!x) return { dtype };
    const starts = intsOf(c, 'starts', 1), ends = intsOf(c, 'ends', 2);
    const axes = intsOf(c, 'axes', 3) ?? (c.has(3) ? undefined : starts?.map((_, i) => i));
    const steps = c.has(4) ? c.v(4)?.data : starts?.map(() => 1);
    if (!axes || axes.includes(null)) return { dtype, shape: x.map(() => null) };
    const shape = [...x];
    const idxs: (number[] | undefined)[] = x.map((d) => (typeof d === 'number' ? [...Array(d).keys()] : undefined));
    axes.forEach((a, i) => {
      const ax = normAxis(a as number, x.length), [st, en, sp] = [starts?.[i] ?? null, ends?.[i] ?? null, steps?.[i] ?? null];
      shape[ax] = sliceDim(x[ax], st, en, sp);
      idxs[ax] = typeof x[ax] === 'number' ? sliceIdx(x[ax] as number, st, en, sp) : undefined;
    });
    let value = c.v(0);
    if (value && idxs.every(Boolean) && isConcrete(shape))
      idxs.forEach((ix, ax) => { if (value) value = gatherVal(value, ix!, ax, value.shape.map((d, i) => (i === ax ? ix!.length : d))); });
    else value = undefined;
    return { dtype, shape, value };
  },
  Gather: (c) => {
    const d = c.t(0).shape, idx = c.t(1).shape, dtype = c.t(0).dtype;
    if (!d || !idx) return { dtype };
    const ax = normAxis(c.int('axis', 0), d.length), shape = [...d.slice(0, ax), ...idx, ...d.slice(ax + 1)];
    const x = c.v(0), iv = c.v(1);
    const ix = iv?.data;
    const value = x && isConcrete(ix) && isConcrete(shape) ? gatherVal(x, ix, ax, shape) : undefined;
    return { dtype, shape, value };
  },
  GatherElements: (c) => ({ dtype: c.t(0).dtype, shape: c.t(1).shape }),
  GatherND: (c) => {
    const d = c.t(0).shape, idx = c.t(1).shape, b = c.int('batch_dims', 0), dtype = c.t(0).dtype;
    const last = idx?.[idx.length - 1];
    if (!d || !idx || typeof last !== 'number') return { dtype };
    return { dtype, shape: [...idx.slice(0, -1), ...d.slice(b + last)] };
  },
  Expand: (c) => {
    const x = c.t(0).shape, sv = c.v(1)?.data, dtype = c.t(0).dtype;
    if (!sv) { const r = rankOnly(c.t(1).shape); return { dtype, shape: r && x && Array(Math.max(r.length, x.length)).fill(null) }; }
    const shape = bcastShapes([x, sv]), v = c.v(0);
    const value = v && isConcrete(sv) && isConcrete(shape) && numelOf(shape) <= MAX_VAL
      ? { shape, data: Array.from({ length: numelOf(shape) }, (_, i) => v.data[bIdx(i, shape, v.shape)]) } : undefined;
    return { dtype, shape, value };
  },
  Tile: (c) => {
    const x = c.t(0).shape, reps = c.v(1)?.data, dtype = c.t(0).dtype;
    return { dtype, shape: x && (reps ? x.map((d, i) => dimMul(d, reps[i] ?? null)) : x.map(() => null)) };
  },
  Pad: (c) => {
    const x = c.t(0).shape, dtype = c.t(0).dtype, pads = intsOf(c, 'pads', 1);
    if (!x) return { dtype };
    if (!pads) return { dtype, shape: x.map(() => null) };
    const axes = (c.has(3) ? c.v(3)?.data : x.map((_, i) => i)) ?? x.map(() => null), n = axes.length, shape = [...x];
    axes.forEach((a, i) => { if (a !== null) { const ax = normAxis(a as number, x.length); shape[ax] = dimAdd(dimAdd(x[ax], pads[i]), pads[i + n]); } });
    return { dtype, shape: axes.includes(null) ? x.map(() => null) : shape };
  },
  Einsum: (c) => einsum(c),
  Resize: (c) => resize(c),
  Upsample: (c) => resize(c),
};

function bIdx(i: number, shape: readonly number[], from: readonly number[]): number {
  let idx = 0, acc = 1;
  for (let r = shape.length - 1, rem = i; r >= 0; r--) {
    const c = rem % shape[r]; rem = Math.floor(rem / shape[r]);
    const j = r - (shape.length - from.length);
    if (j >= 0) { if (from[j] !== 1) idx += c * acc; acc *= from[j]; }
  }
  return idx;
}

function einsum(c: Ctx): Out {
  const dtype = c.t(0).dtype;
  const [lhs, rhs0] = c.str('equation', '').replace(/\s/g, '').split('->');
  const terms = lhs.split(',');
  const dims = new Map<string, Dim>(), count = new Map<string, number>();
  let ell: Dim[] = [], hasEll = false;
  for (let i = 0; i < terms.length; i++) {
    const s = c.t(i).shape, t = terms[i];
    if (!s) return { dtype };
    const e = t.indexOf('...'), letters = t.replace('...', ''), nEll = s.length - letters.length;
    if (e >= 0) { hasEll = true; ell = bcastShapes([ell, s.slice(e, e + nEll)])!; }
    [...letters].forEach((l, p) => {
      const d = s[e >= 0 && p >= e ? p + nEll : p];
      dims.set(l, dims.has(l) ? bcastDim(dims.get(l)!, d) : d);
      count.set(l, (count.get(l) ?? 0) + 1);
    });
  }
  const rhs = rhs0 ?? (hasEll ? '...' : '') + [...count].filter(([, n]) => n === 1).map(([l]) => l).sort().join('');
  const shape: Dim[] = [];
  const parts = rhs.split('...');
  parts.forEach((p, i) => { if (i > 0) shape.push(...ell); for (const l of p) shape.push(dims.get(l) ?? null); });
  return { dtype, shape };
}

function resize(c: Ctx): Out {
  const x = c.t(0).shape, dtype = c.t(0).dtype;
  if (!x) return { dtype };
  const axes = c.ints('axes')?.map((a) => normAxis(a, x.length)) ?? x.map((_, i) => i);
  const sizes = c.n >= 4 && c.has(3) ? c.v(3)?.data : undefined;
  const scales = c.node.opType === 'Upsample' || c.n === 2 ? c.v(1)?.data ?? c.ints('scales') : c.has(2) ? c.v(2)?.data : undefined;
  const shape = [...x];
  axes.forEach((ax, i) => {
    if (sizes) shape[ax] = sizes[i] ?? null;
    else if (scales && scales.length) {
      const s = scales[i], d = x[ax];
      shape[ax] = typeof s !== 'number' ? null : typeof d === 'number' ? Math.floor(d * s) : Number.isInteger(s) ? dimMul(d, s) : null;
    } else shape[ax] = null;
  });
  return { dtype, shape };
}
