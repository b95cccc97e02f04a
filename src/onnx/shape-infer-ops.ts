/**
 * Helpers for shape inference: symbolic dim arithmetic, small-tensor values (for shape arithmetic)
 * and the per-op rules for tensor ops. The driver (`shape-infer.ts`) adds the ops that create values
 * from nothing (Constant, Shape, Range, ...) and control flow.
 *
 * Symbolic dims are strings. Arithmetic on them produces a normalized polynomial form with integer
 * coefficients: `sequence_length+16`, `2*batch_size`, `batch_size*sequence_length`; anything that
 * cannot be expressed exactly (floor division, min, ...) becomes null (unknown).
 */
import type { AttributeProto, NodeProto } from 'onnx-buf';
import type { Dim } from './builder.js';
import { dtypeName, type DT, type DTypeName } from './dtype.js';
import type { ValueType } from './graph.js';

// ---------------------------------------------------------------- symbolic dims

/** monomial key (atoms joined by SEP, '' for the constant term) → integer coefficient */
type Poly = Map<string, number>;
const SEP = '\u0001';
const ATOM = /^[A-Za-z_][\w.]*$/;
const MAX_TERMS = 8;
const polyCache = new Map<string, Poly>();

function parseFactor(f: string): string | number | undefined {
  const s = f.trim();
  if (/^\d+$/.test(s)) return Number(s);
  if (ATOM.test(s)) return s;
  const m = /^\(([^()]*)\)$/.exec(s);
  return m ? m[1] : undefined;
}

/** Parses our own printed form; a string that does not parse is one opaque atom. */
function parseSym(s: string): Poly {
  let p = polyCache.get(s);
  if (p) return p;
  p = parseTerms(s) ?? new Map([[s, 1]]);
  if (polyCache.size > 10_000) polyCache.clear();
  polyCache.set(s, p);
  return p;
}

function parseTerms(s: string): Poly | undefined {
  const p: Poly = new Map();
  let depth = 0, start = 0, sign = 1;
  const terms: [number, string][] = [];
  for (let i = 0; i <= s.length; i++) {
    const ch = s[i];
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (i === s.length || (depth === 0 && (ch === '+' || ch === '-'))) {
      const body = s.slice(start, i);
      if (body.trim() === '') { if (i !== 0 || ch !== '-') return undefined; } else terms.push([sign, body]);
      sign = ch === '-' ? -1 : 1;
      start = i + 1;
    }
  }
  for (const [sg, body] of terms) {
    let coef = sg;
    const atoms: string[] = [];
    for (const f of body.split('*')) {
      const v = parseFactor(f);
      if (v === undefined) return undefined;
      if (typeof v === 'number') coef *= v; else atoms.push(v);
    }
    const key = atoms.sort().join(SEP);
    p.set(key, (p.get(key) ?? 0) + coef);
  }
  return p.size ? p : undefined;
}

const poly = (d: Dim): Poly | undefined => d === null ? undefined : typeof d === 'number' ? new Map([['', d]]) : parseSym(d);

function show(p: Poly | undefined): Dim {
  if (!p) return null;
  const terms = [...p].filter(([, c]) => c !== 0);
  if (terms.length > MAX_TERMS || terms.some(([, c]) => !Number.isSafeInteger(c))) return null;
  if (terms.length === 0) return 0;
  if (terms.length === 1 && terms[0][0] === '') return terms[0][1];
  if (terms.length === 1 && terms[0][1] === 1 && !terms[0][0].includes(SEP) && (ATOM.test(terms[0][0]) || !parseTerms(terms[0][0])))
    return terms[0][0];
  terms.sort(([a], [b]) => (a === '' ? 1 : b === '' ? -1 : a < b ? -1 : a > b ? 1 : 0));
  let out = '';
  for (const [k, c] of terms) {
    const mono = k.split(SEP).map((a) => (ATOM.test(a) ? a : `(${a})`)).join('*');
    const abs = Math.abs(c);
    const body = k === '' ? String(abs) : abs === 1 ? mono : `${abs}*${mono}`;
    out += c < 0 ? `-${body}` : (out ? '+' : '') + body;
  }
  return out;
}

function addPoly(a: Poly, b: Poly, sb = 1): Poly {
  const r = new Map(a);
  for (const [k, c] of b) r.set(k, (r.get(k) ?? 0) + sb * c);
  return r;
}

function mulPoly(a: Poly, b: Poly): Poly {
  const r: Poly = new Map();
  for (const [ka, ca] of a) for (const [kb, cb] of b) {
    const k = ka === '' ? kb : kb === '' ? ka : [...ka.split(SEP), ...kb.split(SEP)].sort().join(SEP);
    r.set(k, (r.get(k) ?? 0) + ca * cb);
  }
  return r;
}

/** Exact division by a single-term divisor; undefined when it does not divide. */
function divPoly(a: Poly, b: Poly): Poly | undefined {
  const bt = [...b].filter(([, c]) => c !== 0);
  if (bt.length !== 1) return undefined;
  const [kb, cb] = bt[0];
  const r: Poly = new Map();
  for (const [ka, ca] of a) {
    if (ca === 0) continue;
    if (ca % cb !== 0) return undefined;
    const atoms = ka === '' ? [] : ka.split(SEP);
    for (const x of kb === '' ? [] : kb.split(SEP)) {
      const at = atoms.indexOf(x);
      if (at < 0) return undefined;
      atoms.splice(at, 1);
    }
    const k = atoms.join(SEP);
    r.set(k, (r.get(k) ?? 0) + ca / cb);
  }
  return r;
}

const num2 = (a: Dim, b: Dim): a is number => typeof a === 'number' && typeof b === 'number';
export const dimAdd = (a: Dim, b: Dim): Dim => num2(a, b) ? a + (b as number) : a === null || b === null ? null : show(addPoly(poly(a)!, poly(b)!));
export const dimSub = (a: Dim, b: Dim): Dim => num2(a, b) ? a - (b as number) : a === null || b === null ? null : show(addPoly(poly(a)!, poly(b)!, -1));
export const dimMul = (a: Dim, b: Dim): Dim => num2(a, b) ? a * (b as number) : a === null || b === null ? null : show(mulPoly(poly(a)!, poly(b)!));
/** Exact division (null when it does not divide evenly or the divisor is not a single term). */
export function dimDiv(a: Dim, b: Dim): Dim {
  if (num2(a, b)) return b !== 0 && a % (b as number) === 0 ? a / (b as number) : null;
  if (a === null || b === null || b === 0) return null;
  const pa = poly(a)!, pb = poly(b)!;
  return show(divPoly(pa, pb));
}
export const dimEq = (a: Dim, b: Dim): boolean => a !== null && b !== null && (a === b || (typeof a === 'string' || typeof b === 'string') && show(poly(a)) === show(poly(b)));
export const dimProd = (ds: readonly Dim[]): Dim => ds.reduce<Dim>((x, y) => dimMul(x, y), 1);

/** Numpy broadcasting of two dims: a symbol is assumed not to be 1 only when the other side is 1. */
export function bcastDim(a: Dim, b: Dim): Dim {
  if (a === b) return a;
  if (a === 1) return b;
  if (b === 1) return a;
  if (typeof a === 'number' && typeof b === 'number') return null; // contradiction; leave unknown
  if (typeof a === 'number' && a !== 1) return a;
  if (typeof b === 'number' && b !== 1) return b;
  return dimEq(a, b) ? a : null;
}

export function bcastShapes(shapes: readonly (readonly Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.some((s) => !s)) return undefined;
  const rank = Math.max(0, ...shapes.map((s) => s!.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) { const j = s!.length - rank + i; if (j >= 0) d = bcastDim(d, s![j]); }
    out.push(d);
  }
  return out;
}

/** Refines: keeps what `a` knows, fills its unknowns from `b` (numbers beat symbols). */
export function mergeDim(a: Dim, b: Dim): Dim {
  if (a === null) return b;
  if (b === null || a === b) return a;
  return typeof b === 'number' && typeof a === 'string' ? b : a;
}

// ---------------------------------------------------------------- small values

export const MAX_VAL = 64;
/** A small tensor's contents, row-major; each element a number, a symbolic dim or null. */
export interface Val { readonly shape: readonly number[]; readonly data: readonly Dim[] }
export const numelOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
export const isConcrete = (s: readonly Dim[] | undefined): s is number[] => !!s && s.every((d) => typeof d === 'number');

/** Elementwise over broadcast values. */
export function mapVals(vals: readonly Val[], f: (xs: Dim[]) => Dim): Val | undefined {
  const shape = bcastShapes(vals.map((v) => v.shape));
  if (!isConcrete(shape) || numelOf(shape) > MAX_VAL) return undefined;
  const n = numelOf(shape), data: Dim[] = [];
  const strides = vals.map((v) => {
    const st: number[] = new Array(shape.length).fill(0);
    let acc = 1;
    for (let i = v.shape.length - 1; i >= 0; i--) { st[shape.length - v.shape.length + i] = v.shape[i] === 1 ? 0 : acc; acc *= v.shape[i]; }
    return st;
  });
  for (let i = 0; i < n; i++) {
    const idx = vals.map(() => 0);
    for (let r = shape.length - 1, rem = i; r >= 0; r--) {
      const c = rem % shape[r]; rem = Math.floor(rem / shape[r]);
      strides.forEach((st, k) => { idx[k] += c * st[r]; });
    }
    data.push(f(vals.map((v, k) => v.data[idx[k]])));
  }
  return { shape, data };
}

const isInt = (dt: DTypeName | undefined): boolean => !!dt && /int|bool/.test(dt);
const nums = (xs: Dim[]): xs is number[] => xs.every((x) => typeof x === 'number');
const cmp = (f: (a: number, b: number) => boolean) => ([a, b]: Dim[]): Dim => {
  if (nums([a, b])) return f(a as number, b as number) ? 1 : 0;
  // symbolic dims are >= 0: decide against negative constants
  if (typeof a === 'string' && typeof b === 'number' && b < 0) return f(1, b) ? 1 : 0;
  if (typeof b === 'string' && typeof a === 'number' && a < 0) return f(a, 1) ? 1 : 0;
  if (a !== null && dimEq(a, b)) return f(0, 0) ? 1 : 0;
  return null;
};

/** Elementwise value rules, keyed by op; `dt` is the output (or input, for comparisons) dtype. */
export const VALUE_OPS: Record<string, (xs: Dim[], dt: DTypeName | undefined) => Dim> = {
  Identity: ([a]) => a,
  Add: ([a, b]) => dimAdd(a, b),
  Sub: ([a, b]) => dimSub(a, b),
  Mul: ([a, b], dt) => { const r = dimMul(a, b); return typeof r === 'number' && isInt(dt) ? Math.trunc(r) : r; },
  Div: ([a, b], dt) => typeof a === 'number' && typeof b === 'number' ? (isInt(dt) ? Math.trunc(a / b) : a / b) : dimDiv(a, b),
  Mod: ([a, b]) => (typeof a === 'number' && typeof b === 'number' && b !== 0 ? a % b : null),
  Neg: ([a]) => dimMul(a, -1),
  Abs: ([a]) => (typeof a === 'number' ? Math.abs(a) : a),
  Floor: ([a]) => (typeof a === 'number' ? Math.floor(a) : a),
  Ceil: ([a]) => (typeof a === 'number' ? Math.ceil(a) : a),
  Sqrt: ([a]) => (typeof a === 'number' ? Math.sqrt(a) : null),
  Pow: ([a, b]) => (typeof a === 'number' && typeof b === 'number' ? a ** b : b === 1 ? a : null),
  Max: (xs) => nums(xs) ? Math.max(...xs) : xs.every((x) => dimEq(x, xs[0])) ? xs[0] : null,
  Min: (xs) => nums(xs) ? Math.min(...xs) : xs.every((x) => dimEq(x, xs[0])) ? xs[0] : null,
  Equal: cmp((a, b) => a === b),
  Less: cmp((a, b) => a < b),
  LessOrEqual: cmp((a, b) => a <= b),
  Greater: cmp((a, b) => a > b),
  GreaterOrEqual: cmp((a, b) => a >= b),
  Not: ([a]) => (typeof a === 'number' ? (a ? 0 : 1) : null),
  And: ([a, b]) => (a === 0 || b === 0 ? 0 : nums([a, b]) ? 1 : null),
  Or: ([a, b]) => (a === 1 || b === 1 ? 1 : nums([a, b]) ? 0 : null),
  Where: ([c, a, b]) => (c === null ? (dimEq(a, b) ? a : null) : c ? a : b),
};

function clipDim(x: Dim, lo: Dim | undefined, hi: Dim | undefined): Dim {
  if (lo === null || hi === null) return null;
  if (typeof x !== 'number') return (lo === undefined || (typeof lo === 'number' && lo <= 0)) && hi === undefined ? x : null;
  return Math.min(Math.max(x, typeof lo === 'number' ? lo : -Infinity), typeof hi === 'number' ? hi : Infinity);
}

export function castValue(x: Dim, to: DTypeName | undefined): Dim {
  if (typeof x !== 'number') return to === 'bool' ? null : x;
  if (to === 'bool') return x ? 1 : 0;
  return isInt(to) ? Math.trunc(x) : x;
}

// ---------------------------------------------------------------- per-op rules

export interface Ctx {
  readonly node: NodeProto;
  /** Number of inputs (including empty trailing ones). */
  readonly n: number;
  has(i: number): boolean;
  t(i: number): ValueType;
  v(i: number): Val | undefined;
  attr(name: string): AttributeProto | undefined;
  int(name: string, dflt: number): number;
  ints(name: string): number[] | undefined;
  float(name: string, dflt: number): number;
  str(name: string, dflt: string): string;
}

export interface Out { readonly dtype?: DTypeName; readonly shape?: readonly Dim[]; readonly value?: Val }
export type Rule = (c: Ctx) => readonly (Out | undefined)[] | Out | undefined;

export const normAxis = (a: number, rank: number): number => (a < 0 ? a + rank : a);
const firstDtype = (c: Ctx, from = 0): DTypeName | undefined => {
  for (let i = from; i < c.n; i++) if (c.t(i).dtype) return c.t(i).dtype;
  return undefined;
};
/** Integer list from an attribute, or else from a value-known input. `null` entries are unknown. */
export function intsOf(c: Ctx, attr: string, input: number): Dim[] | undefined {
  const a = c.ints(attr);
  if (a) return a;
  if (input < c.n && c.has(input)) return c.v(input)?.data.slice();
  return undefined;
}

const same = (c: Ctx): Out => ({ dtype: c.t(0).dtype, shape: c.t(0).shape });

function elementwise(op: string | undefined, dtype: (c: Ctx) => DTypeName | undefined, inputs?: number[]): Rule {
  return (c) => {
    const idx = inputs ?? [...Array(c.n).keys()].filter((i) => c.has(i));
    const shape = bcastShapes(idx.map((i) => c.t(i).shape));
    const dt = dtype(c);
    let value: Val | undefined;
    const f = op ? VALUE_OPS[op] : undefined;
    if (f) {
      const vals = idx.map((i) => c.v(i));
      const valDt = /Equal|Less|Greater/.test(op!) ? firstDtype(c) : dt;
      if (vals.every(Boolean)) value = mapVals(vals as Val[], (xs) => f(xs, valDt));
    }
    return { dtype: dt, shape: value?.shape ?? shape, value };
  };
}

const BOOL = (): DTypeName => 'bool';
const SAME_OPS = ['Identity', 'Neg', 'Abs', 'Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Erf', 'Cos', 'Sin', 'Tan',
  'Reciprocal', 'Floor', 'Ceil', 'Round', 'Sign', 'Softmax', 'LogSoftmax', 'Hardmax', 'Gelu', 'FastGelu', 'QuickGelu',
  'HardSigmoid', 'HardSwish', 'LeakyRelu', 'Elu', 'Selu', 'Celu', 'Softplus', 'Softsign', 'Mish', 'ThresholdedRelu',
  'Atan', 'Asin', 'Acos', 'Sinh', 'Cosh', 'Asinh', 'Acosh', 'Atanh', 'CumSum', 'Trilu', 'LpNormalization',
  'InstanceNormalization', 'MeanVarianceNormalization', 'LRN', 'SimplifiedLayerNormalization', 'RMSNormalization',
  'GroupNormalization', 'GroupNorm', 'RotaryEmbedding', 'Shrink', 'ReverseSequence', 'ScatterND', 'ScatterElements',
  'Scatter', 'BitwiseNot'];

export const RULES: Record<string, Rule> = {};
for (const op of SAME_OPS) RULES[op] = elementwise(op in VALUE_OPS ? op : undefined, (c) => c.t(0).dtype, [0]);
RULES.Not = elementwise('Not', BOOL, [0]);
for (const op of ['IsNaN', 'IsInf']) RULES[op] = elementwise(undefined, BOOL, [0]);
RULES.Clip = (c) => {
  const x = c.v(0), bound = (i: number): Dim | undefined => (c.has(i) ? c.v(i)?.data[0] ?? null : undefined);
  const lo = bound(1), hi = bound(2);
  return { ...same(c), value: x && mapVals([x], ([d]) => clipDim(d, lo, hi)) };
};
RULES.Dropout = (c) => [same(c), { dtype: 'bool', shape: c.t(0).shape }];
RULES.BatchNormalization = (c) => [same(c)];
for (const op of ['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Mod', 'Max', 'Min', 'Sum', 'Mean', 'PRelu', 'BitShift', 'BitwiseAnd',
  'BitwiseOr', 'BitwiseXor', 'BiasGelu']) RULES[op] = elementwise(op in VALUE_OPS ? op : undefined, (c) => firstDtype(c));
for (const op of ['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'And', 'Or', 'Xor'])
  RULES[op] = elementwise(op in VALUE_OPS ? op : undefined, BOOL);
RULES.Where = elementwise('Where', (c) => c.t(1).dtype ?? c.t(2).dtype);
RULES.Cast = (c) => {
  const to = c.attr('to');
  const dt = to ? (dtypeOfEnum(Number(to.i)) ?? undefined) : undefined;
  const x = c.v(0);
  return { dtype: dt, shape: c.t(0).shape, value: x && { shape: x.shape, data: x.data.map((d) => castValue(d, dt)) } };
};
RULES.CastLike = (c) => {
  const dt = c.t(1).dtype, x = c.v(0);
  return { dtype: dt, shape: c.t(0).shape, value: x && { shape: x.shape, data: x.data.map((d) => castValue(d, dt)) } };
};

// Normalizations: first output is like the input; LayerNormalization's mean/inv-std keep leading dims.
RULES.LayerNormalization = (c) => {
  const s = c.t(0).shape, axis = s ? normAxis(c.int('axis', -1), s.length) : 0;
  const stat: Out = { dtype: 'float32', shape: s && s.map((d, i) => (i < axis ? d : 1)) };
  return [same(c), stat, stat];
};
const skipNorm: Rule = (c) => {
  const s = c.t(0).shape;
  const stat: Out = { dtype: 'float32', shape: s && s.map((d, i) => (i < s.length - 1 ? d : 1)) };
  return [same(c), stat, stat, same(c)];
};
RULES.SkipLayerNormalization = skipNorm;
RULES.SkipSimplifiedLayerNormalization = skipNorm;

export function dtypeOfEnum(e: number): DTypeName | undefined {
  try { return dtypeName(e as DT); } catch { return undefined; }
}

// ---------------------------------------------------------------- compute ops

function matmulShape(a?: readonly Dim[], b?: readonly Dim[]): Dim[] | undefined {
  if (!a || !b || a.length === 0 || b.length === 0) return undefined;
  const aa = a.length === 1 ? [1, a[0]] : a, bb = b.length === 1 ? [b[0], 1] : b;
  const out = bcastShapes([aa.slice(0, -2), bb.slice(0, -2)])!;
  if (a.length > 1) out.push(aa[aa.length - 2]);
  if (b.length > 1) out.push(bb[bb.length - 1]);
  return out;
}
RULES.MatMul = (c) => ({ dtype: firstDtype(c), shape: matmulShape(c.t(0).shape, c.t(1).shape) });
RULES.MatMulInteger = (c) => ({ dtype: 'int32', shape: matmulShape(c.t(0).shape, c.t(1).shape) });
RULES.FusedMatMul = (c) => {
  const tr = (s: readonly Dim[] | undefined, t: number) => (s && t && s.length >= 2 ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);
  return { dtype: firstDtype(c), shape: matmulShape(tr(c.t(0).shape, c.int('transA', 0)), tr(c.t(1).shape, c.int('transB', 0))) };
};
RULES.Gemm = (c) => {
  const a = c.t(0).shape, b = c.t(1).shape;
  const m = a?.length === 2 ? a[c.int('transA', 0) ? 1 : 0] : null, n = b?.length === 2 ? b[c.int('transB', 0) ? 0 : 1] : null;
  return { dtype: firstDtype(c), shape: [m, n] };
};
RULES.MatMulNBits = (c) => {
  const a = c.t(0).shape, n = c.int('N', -1);
  return { dtype: c.t(0).dtype, shape: a && [...a.slice(0, -1), n >= 0 ? n : null] };
};

type ConvKind = 'conv' | 'convT' | 'pool';
function convLike(c: Ctx, kind: ConvKind): Out[] {
  const x = c.t(0).shape, w = c.t(1).shape, dtype = c.t(0).dtype;
  if (!x || x.length < 3) return [{ dtype }];
  const sp = x.length - 2, ones = Array(sp).fill(1);
  const k: Dim[] = c.ints('kernel_shape') ?? (kind !== 'pool' && w?.length === x.length ? w.slice(2) : Array(sp).fill(null));
  const strides = c.ints('strides') ?? ones, dil = c.ints('dilations') ?? ones;
  const autoPad = c.str('auto_pad', 'NOTSET'), pads = autoPad === 'VALID' ? Array(2 * sp).fill(0) : c.ints('pads') ?? Array(2 * sp).fill(0);
  const ceil = c.int('ceil_mode', 0), group = c.int('group', 1);
  const ch = kind === 'conv' ? w?.[0] ?? null : kind === 'convT' ? (w ? dimMul(w[1], group) : null) : x[1];
  const given = kind === 'convT' ? c.ints('output_shape') : undefined;
  const outPad = c.ints('output_padding') ?? Array(sp).fill(0);
  const spatial = x.slice(2).map((d, i): Dim => {
    if (given) return given[given.length - sp + i];
    const s = strides[i], kk = k[i], pb = pads[i], pe = pads[i + sp];
    const eff = typeof kk === 'number' ? dil[i] * (kk - 1) + 1 : null;
    if (kind === 'convT') {
      if (autoPad.startsWith('SAME')) return dimMul(d, s);
      return eff === null ? null : dimAdd(dimMul(dimSub(d, 1), s), outPad[i] + eff - pb - pe);
    }
    if (autoPad.startsWith('SAME')) return s === 1 ? d : typeof d === 'number' ? Math.ceil(d / s) : null;
    if (eff === null) return null;
    if (typeof d === 'number') return (ceil ? Math.ceil : Math.floor)((d + pb + pe - eff) / s) + 1;
    return s === 1 ? dimAdd(d, pb + pe - eff + 1) : null;
  });
  const out: Out = { dtype, shape: [x[0], ch, ...spatial] };
  return [out, { dtype: 'int64', shape: out.shape }];
}
RULES.Conv = (c) => convLike(c, 'conv')[0];
RULES.ConvTranspose = (c) => convLike(c, 'convT')[0];
for (const op of ['MaxPool', 'AveragePool', 'LpPool']) RULES[op] = (c) => convLike(c, 'pool');
for (const op of ['GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool'])
  RULES[op] = (c) => { const s = c.t(0).shape; return { dtype: c.t(0).dtype, shape: s && s.map((d, i) => (i < 2 ? d : 1)) }; };

function reduce(c: Ctx, dtype: DTypeName | undefined): Out {
  const s = c.t(0).shape, keep = c.int('keepdims', 1);
  const axes = intsOf(c, 'axes', 1); // attribute before opset 13/18, input after
  if (!s) return { dtype };
  if ((c.has(1) && !axes) || axes?.some((a) => a === null))
    return { dtype, shape: keep ? s.map(() => null) : undefined };
  if (!axes || axes.length === 0) {
    if (c.int('noop_with_empty_axes', 0)) return { dtype, shape: s, value: c.v(0) };
  }
  const set = new Set((axes?.length ? axes as number[] : s.map((_, i) => i)).map((a) => normAxis(a, s.length)));
  const shape = keep ? s.map((d, i) => (set.has(i) ? 1 : d)) : s.filter((_, i) => !set.has(i));
  const x = c.v(0);
  let value: Val | undefined;
  if (x && x.shape.length === 1 && set.size === 1 && /Sum|Prod/.test(c.node.opType))
    value = { shape: shape as number[], data: [x.data.reduce<Dim>((a, b) => (c.node.opType === 'ReduceSum' ? dimAdd(a, b) : dimMul(a, b)), c.node.opType === 'ReduceSum' ? 0 : 1)] };
  return { dtype, shape, value };
}
for (const op of ['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2',
  'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare'])
  RULES[op] = (c) => reduce(c, c.t(0).dtype);
for (const op of ['ArgMax', 'ArgMin']) RULES[op] = (c) => {
  const s = c.t(0).shape;
  if (!s) return { dtype: 'int64' };
  const ax = normAxis(c.int('axis', 0), s.length);
  return { dtype: 'int64', shape: c.int('keepdims', 1) ? s.map((d, i) => (i === ax ? 1 : d)) : s.filter((_, i) => i !== ax) };
};
RULES.TopK = (c) => {
  const s = c.t(0).shape, k = c.has(1) ? c.v(1)?.data[0] ?? null : c.int('k', -1);
  const shape = s && s.map((d, i) => (i === normAxis(c.int('axis', -1), s.length) ? k : d));
  return [{ dtype: c.t(0).dtype, shape }, { dtype: 'int64', shape }];
};

// ---------------------------------------------------------------- quantization and com.microsoft ops

RULES.DequantizeLinear = (c) => ({ dtype: c.t(1).dtype ?? dtypeOfEnum(c.int('output_dtype', 1)), shape: c.t(0).shape });
RULES.QuantizeLinear = (c) => ({
  dtype: c.has(2) && c.t(2).dtype ? c.t(2).dtype : dtypeOfEnum(c.int('output_dtype', 0) || 2), shape: c.t(0).shape,
});
RULES.DynamicQuantizeLinear = (c) => [{ dtype: 'uint8', shape: c.t(0).shape }, { dtype: 'float32', shape: [] }, { dtype: 'uint8', shape: [] }];
RULES.GatherBlockQuantized = (c) => {
  const d = c.t(0).shape, idx = c.t(1).shape, dtype = c.t(2).dtype;
  if (!d || !idx) return { dtype };
  const ax = normAxis(c.int('gather_axis', 0), d.length);
  const shape = [...d.slice(0, ax), ...idx, ...d.slice(ax + 1)];
  if (c.t(0).dtype === 'uint8' && ax < d.length - 1) shape[shape.length - 1] = dimMul(shape[shape.length - 1], 8 / c.int('bits', 4));
  return { dtype, shape };
};
RULES.Attention = (c) => {
  const x = c.t(0).shape, w = c.t(1).shape, sizes = c.ints('qkv_hidden_sizes');
  const v = sizes ? sizes[2] : w?.length === 2 ? dimDiv(w[1], 3) : null;
  return { dtype: c.t(0).dtype, shape: x && x.length === 3 ? [x[0], x[1], v] : undefined };
};
RULES.MultiHeadAttention = (c) => {
  const q = c.t(0).shape, v = c.has(2) ? c.t(2).shape : undefined;
  if (!q) return { dtype: c.t(0).dtype };
  const hidden = v?.length === 3 ? v[2] : v?.length === 4 ? dimMul(v[1], v[3]) : q.length === 5 ? dimMul(q[2], q[4]) : q[2];
  return { dtype: c.t(0).dtype, shape: [q[0], q[1], hidden] };
};
RULES.GroupQueryAttention = (c) => {
  const q = c.t(0).shape, dtype = c.t(0).dtype, nh = c.int('num_heads', 0), kvh = c.int('kv_num_heads', 0);
  if (!q || q.length !== 3) return { dtype };
  const k = c.has(1) ? c.t(1).shape : undefined;
  const head = k ? (k.length === 3 ? dimDiv(k[2], kvh) : k[3] ?? null) : dimDiv(q[2], nh + 2 * kvh);
  const present: Out = { dtype, shape: [q[0], kvh, null, head] };
  return [{ dtype, shape: [q[0], q[1], k ? q[2] : dimMul(head, nh)] }, present, present];
};

/** Replaces bound symbols (e.g. from concrete input shapes) inside a symbolic dim. */
export function dimSubst(d: Dim, env: ReadonlyMap<string, Dim>): Dim {
  if (typeof d !== 'string' || env.size === 0) return d;
  if (env.has(d)) return env.get(d)!;
  let acc: Dim = 0;
  for (const [k, c] of parseSym(d)) {
    let t: Dim = c;
    for (const a of k === '' ? [] : k.split(SEP)) t = dimMul(t, env.has(a) ? env.get(a)! : ATOM.test(a) ? a : `(${a})`);
    acc = dimAdd(acc, t);
  }
  return acc;
}
