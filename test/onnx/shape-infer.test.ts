import { readFileSync } from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import ort from 'onnxruntime-node';
import {
  ModelProtoSchema, StringStringEntryProtoSchema, TensorProto_DataLocation, TensorProtoSchema, type TensorProto,
} from 'onnx-buf';
import { describe, expect, it } from 'vitest';
import { GraphBuilder, makeTensor, makeValueInfo, type Dim } from '../../src/onnx/builder.js';
import { DT } from '../../src/onnx/dtype.js';
import { Graph, type ValueType } from '../../src/onnx/graph.js';
import { loadModel } from '../../src/onnx/model-io.js';
import { dimAdd, dimDiv, dimMul, dimSub, inferTypes, type InferOptions } from '../../src/onnx/shape-infer.js';

const INT_MAX = 9223372036854775807n;
const infer = (b: GraphBuilder, opts?: InferOptions): Map<string, ValueType> => inferTypes(new Graph(b.graph()), opts);
const i64 = (v: readonly (number | bigint)[]): BigInt64Array => BigInt64Array.from(v.map((x) => BigInt(x)));
/** A 1-D int64 initializer that may hold values beyond 2^53 (the exporter's INT64_MAX slice ends). */
const ints = (b: GraphBuilder, v: readonly (number | bigint)[]): string => b.init('onnx::Constant', [v.length], i64(v));

/** x: float32 [batch_size, sequence_length, 64] */
function withX(shape: readonly Dim[] = ['batch_size', 'sequence_length', 64]): { b: GraphBuilder; x: string } {
  const b = new GraphBuilder();
  return { b, x: b.input('x', 'float32', shape) };
}

describe('symbolic dim arithmetic', () => {
  it('normalizes sums, products and exact quotients', () => {
    expect(dimAdd('sequence_length', 16)).toBe('sequence_length+16');
    expect(dimAdd(16, 'sequence_length')).toBe('sequence_length+16');
    expect(dimMul('batch_size', 2)).toBe('2*batch_size');
    expect(dimMul('sequence_length', 'batch_size')).toBe('batch_size*sequence_length');
    expect(dimSub(dimAdd('s', 16), 16)).toBe('s');
    expect(dimSub('s', 's')).toBe(0);
    expect(dimAdd('s', 's')).toBe('2*s');
    expect(dimDiv('4*s', 4)).toBe('s');
    expect(dimDiv(dimMul('b', 's'), 'b')).toBe('s');
    expect(dimDiv('s', 2)).toBeNull();
    expect(dimAdd('s', null)).toBeNull();
    expect(dimMul(dimAdd('s', 1), 2)).toBe('2*s+2');
    expect(dimSub(16, 's')).toBe('-s+16');
    expect(dimAdd('unk with spaces', 1)).toBe('(unk with spaces)+1');
    expect(dimSub(dimAdd('unk with spaces', 1), 1)).toBe('unk with spaces');
  });
});

describe('shape arithmetic (value propagation)', () => {
  it('resolves Shape → Gather → Unsqueeze → Concat → Reshape with a -1', () => {
    const { b, x } = withX();
    const batch = b.op('Gather', [b.op('Shape', [x]), b.const(0, 'int64', [])], { axis: 0 });
    const target = b.op('Concat', [b.op('Unsqueeze', [batch, b.const([0])]), b.const([-1]), b.const([16])], { axis: 0 });
    const y = b.op('Reshape', [x, target]);
    const t = infer(b);
    expect(t.get(target)).toEqual({ dtype: 'int64', shape: [3] });
    expect(t.get(y)).toEqual({ dtype: 'float32', shape: ['batch_size', '4*sequence_length', 16] });
  });

  it('keeps 0 entries, honours allowzero and builds sums of symbols', () => {
    const { b, x } = withX();
    const shp = b.op('Shape', [x]);
    const seq = b.op('Gather', [shp, b.const(1, 'int64', [])]);
    const longer = b.op('Add', [seq, b.const(16, 'int64', [])]);
    const twice = b.op('Mul', [b.op('Gather', [shp, b.const(0, 'int64', [])]), b.const(2, 'int64', [])]);
    const tgt = b.op('Concat', [b.op('Unsqueeze', [twice, b.const([0])]), b.op('Unsqueeze', [longer, b.const([0])])], { axis: 0 });
    const c = b.op('ConstantOfShape', [tgt]);
    const r0 = b.op('Reshape', [x, b.const([0, 0, 8, 8])]);
    const rz = b.op('Reshape', [x, b.const([0, -1])], { allowzero: 1 });
    const partial = b.op('Reshape', [b.input('p', 'float32', [null, 'n', 4, 16]), b.const([0, -1])]);
    const t = infer(b);
    expect(t.get(c)?.shape).toEqual(['2*batch_size', 'sequence_length+16']);
    expect(t.get(c)?.dtype).toBe('float32');
    expect(t.get(r0)?.shape).toEqual(['batch_size', 'sequence_length', 8, 8]);
    expect(t.get(rz)?.shape).toEqual([0, null]);
    expect(t.get(partial)?.shape).toEqual([null, '64*n']);
  });

  it('resolves the exporter Where(Equal(shape, -1), 1, shape) guard before Expand', () => {
    const { b, x } = withX();
    const tgt = b.op('Concat', [b.const([-1]), b.op('Unsqueeze', [b.op('Gather', [b.op('Shape', [x]), b.const(1, 'int64', [])]), b.const([0])]), b.const([64])], { axis: 0 });
    const ones = b.op('ConstantOfShape', [b.op('Shape', [tgt])], { value: makeTensor('v', [1], i64([1])) });
    const eq = b.op('Equal', [tgt, b.op('Mul', [ones, b.const(-1, 'int64', [])])]);
    const fixed = b.op('Where', [eq, ones, tgt]);
    const small = b.input('small', 'float32', ['batch_size', 1, 1]);
    const y = b.op('Expand', [small, fixed]);
    const t = infer(b);
    expect(t.get(eq)).toEqual({ dtype: 'bool', shape: [3] });
    expect(t.get(y)?.shape).toEqual(['batch_size', 'sequence_length', 64]);
  });

  it('derives Range lengths, ConstantOfShape and Expand from shape values', () => {
    const { b, x } = withX();
    const seq = b.op('Gather', [b.op('Shape', [x]), b.const(1, 'int64', [])]);
    const pos = b.op('Range', [b.const(0, 'int64', []), seq, b.const(1, 'int64', [])]);
    const fixed = b.op('Range', [b.const(2, 'int64', []), b.const(11, 'int64', []), b.const(3, 'int64', [])]);
    const floats = b.op('Range', [b.const(0, 'float32', []), b.const(1, 'float32', []), b.const(0.25, 'float32', [])]);
    const grid = b.op('Expand', [b.op('Unsqueeze', [pos, b.const([0])]), b.op('Shape', [b.op('ReduceMean', [x], { axes: [2], keepdims: 0 })])]);
    const full = b.op('ConstantOfShape', [b.op('Shape', [x])], { value: makeTensor('v', [1], i64([7])) });
    const sum = b.op('ReduceSum', [fixed], { keepdims: 0 });
    const t = infer(b);
    expect(t.get(pos)).toEqual({ dtype: 'int64', shape: ['sequence_length'] });
    expect(t.get(fixed)?.shape).toEqual([3]);
    expect(t.get(floats)).toEqual({ dtype: 'float32', shape: [4] });
    expect(t.get(grid)).toEqual({ dtype: 'int64', shape: ['batch_size', 'sequence_length'] });
    expect(t.get(full)).toEqual({ dtype: 'int64', shape: ['batch_size', 'sequence_length', 64] });
    expect(t.get(sum)).toEqual({ dtype: 'int64', shape: [] });
  });

  it('takes shape values from Slice, Squeeze, Cast and Div on shape tensors', () => {
    const { b, x } = withX(['batch_size', 'sequence_length', 4, 16]);
    const shp = b.op('Shape', [x]);
    const lead = b.op('Slice', [shp, b.const([0]), b.const([2])]);
    const half = b.op('Div', [b.op('Squeeze', [b.op('Slice', [shp, b.const([-1]), ints(b, [INT_MAX])]), b.const([0])]), b.const(2, 'int64', [])]);
    const tgt = b.op('Concat', [lead, b.const([-1]), b.op('Unsqueeze', [b.op('Cast', [half], { to: DT.INT64 }), b.const([0])])], { axis: 0 });
    const y = b.op('Reshape', [x, tgt]);
    const tail = b.op('Shape', [x], { start: -2 });
    const t = infer(b);
    expect(t.get(y)?.shape).toEqual(['batch_size', 'sequence_length', 8, 8]);
    expect(t.get(tail)?.shape).toEqual([2]);
  });

  it('reads small int initializers stored as external data through readInitializer', () => {
    const { b, x } = withX([2, 8, 64]);
    const ext: TensorProto = create(TensorProtoSchema, {
      name: 'ext_shape', dims: [2n], dataType: DT.INT64, dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [create(StringStringEntryProtoSchema, { key: 'location', value: 'w.bin' })],
    });
    b.initializers.push(ext);
    const y = b.op('Reshape', [x, 'ext_shape']);
    expect(infer(b).get(y)?.shape).toEqual([null, null]);
    const read = (t: TensorProto) => (t.name === 'ext_shape' ? new Uint8Array(i64([16, -1]).buffer) : undefined);
    expect(infer(b, { readInitializer: read }).get(y)?.shape).toEqual([16, 64]);
  });
});

describe('per-op rules', () => {
  it('broadcasts elementwise ops numpy-style and types comparisons as bool', () => {
    const b = new GraphBuilder();
    const a = b.input('a', 'float32', ['batch', 1, 'seq']);
    const c = b.input('c', 'float32', [4, 1]);
    const s = b.op('Add', [a, c]);
    const m = b.op('Mul', [b.const(2, 'float32', []), a]);
    const lt = b.op('Less', [a, c]);
    const w = b.op('Where', [lt, s, b.const(0, 'float32', [])]);
    const n = b.op('Not', [lt]);
    const u = b.op('Sqrt', [b.op('Relu', [a])]);
    const t = infer(b);
    expect(t.get(s)).toEqual({ dtype: 'float32', shape: ['batch', 4, 'seq'] });
    expect(t.get(m)).toEqual({ dtype: 'float32', shape: ['batch', 1, 'seq'] });
    expect(t.get(lt)).toEqual({ dtype: 'bool', shape: ['batch', 4, 'seq'] });
    expect(t.get(w)).toEqual({ dtype: 'float32', shape: ['batch', 4, 'seq'] });
    expect(t.get(n)?.dtype).toBe('bool');
    expect(t.get(u)).toEqual({ dtype: 'float32', shape: ['batch', 1, 'seq'] });
  });

  it('infers MatMul (batched, broadcast, 1-D) and Gemm', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'float16', ['b', 's', 64]);
    const w = b.init('w', [64, 32], new Uint16Array(64 * 32), 'float16');
    const v = b.init('v', [64], new Uint16Array(64), 'float16');
    const p = b.input('p', 'float32', [2, 1, 3, 4]);
    const q = b.input('q', 'float32', [5, 4, 6]);
    const g = b.input('g', 'float32', [8, 16]);
    const h = b.input('h', 'float32', [10, 16]);
    const mm = b.op('MatMul', [x, w]), vec = b.op('MatMul', [x, v]), left = b.op('MatMul', [v, w]);
    const bat = b.op('MatMul', [p, q]), gemm = b.op('Gemm', [g, h], { transB: 1 });
    const r = infer(b);
    expect(r.get(mm)).toEqual({ dtype: 'float16', shape: ['b', 's', 32] });
    expect(r.get(vec)?.shape).toEqual(['b', 's']);
    expect(r.get(left)?.shape).toEqual([32]);
    expect(r.get(bat)?.shape).toEqual([2, 5, 3, 6]);
    expect(r.get(gemm)).toEqual({ dtype: 'float32', shape: [8, 10] });
  });

  it('infers Conv with stride, pads, dilation, groups and auto_pad, ConvTranspose and pooling', () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'float32', [1, 3, 32, 32]);
    const w = b.init('w', [8, 3, 3, 3], new Float32Array(8 * 27));
    const dw = b.init('dw', [8, 1, 3, 3], new Float32Array(72));
    const c1 = b.op('Conv', [x, w], { pads: [1, 1, 1, 1], strides: [2, 2] });
    const c2 = b.op('Conv', [x, w], { dilations: [2, 2] });
    const c3 = b.op('Conv', [c1, dw], { group: 8, auto_pad: 'SAME_UPPER', strides: [3, 3] });
    const y = b.input('y', 'float32', ['n', 16, 'frames']);
    const c4 = b.op('Conv', [y, b.init('w1', [32, 16, 3], new Float32Array(32 * 48))], { kernel_shape: [3] });
    const ct = b.op('ConvTranspose', [c1, b.init('wt', [8, 4, 2, 2], new Float32Array(128))], { strides: [2, 2] });
    const [mp, idx] = b.opN('MaxPool', [c1], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }, { outputs: 2 });
    const ap = b.op('AveragePool', [c1], { kernel_shape: [2, 2], strides: [2, 2] });
    const gp = b.op('GlobalAveragePool', [c1]);
    const t = infer(b);
    expect(t.get(c1)).toEqual({ dtype: 'float32', shape: [1, 8, 16, 16] });
    expect(t.get(c2)?.shape).toEqual([1, 8, 28, 28]);
    expect(t.get(c3)?.shape).toEqual([1, 8, 6, 6]);
    expect(t.get(c4)?.shape).toEqual(['n', 32, 'frames-2']);
    expect(t.get(ct)?.shape).toEqual([1, 4, 32, 32]);
    expect(t.get(mp)?.shape).toEqual([1, 8, 8, 8]);
    expect(t.get(idx)).toEqual({ dtype: 'int64', shape: [1, 8, 8, 8] });
    expect(t.get(ap)?.shape).toEqual([1, 8, 8, 8]);
    expect(t.get(gp)?.shape).toEqual([1, 8, 1, 1]);
  });

  it('infers Transpose, Flatten, Squeeze and Unsqueeze (axes as input and as attribute)', () => {
    const { b, x } = withX(['b', 1, 's', 64]);
    const tp = b.op('Transpose', [x], { perm: [0, 2, 1, 3] });
    const rev = b.op('Transpose', [x]);
    const fl = b.op('Flatten', [x], { axis: 2 });
    const sq = b.op('Squeeze', [x, b.const([1])]);
    const sqAll = b.op('Squeeze', [b.input('o', 'float32', [1, 7, 1])]);
    const us = b.op('Unsqueeze', [x, b.const([0, -1])]);
    const usAttr = b.op('Unsqueeze', [x], { axes: [1] });
    const t = infer(b);
    expect(t.get(tp)?.shape).toEqual(['b', 's', 1, 64]);
    expect(t.get(rev)?.shape).toEqual([64, 's', 1, 'b']);
    expect(t.get(fl)?.shape).toEqual(['b', '64*s']);
    expect(t.get(sq)?.shape).toEqual(['b', 's', 64]);
    expect(t.get(sqAll)?.shape).toEqual([7]);
    expect(t.get(us)?.shape).toEqual([1, 'b', 1, 's', 64, 1]);
    expect(t.get(usAttr)?.shape).toEqual(['b', 1, 1, 's', 64]);
  });

  it('infers Slice with negative, clamped, stepped and symbolic bounds', () => {
    const { b, x } = withX(['b', 's', 10]);
    const big = INT_MAX;
    const sl = (st: (number | bigint)[], en: (number | bigint)[], ax: number[], sp?: number[]) =>
      b.op('Slice', [x, ints(b, st), ints(b, en), b.const(ax), ...(sp ? [b.const(sp)] : [])]);
    const tail = sl([-3], [big], [2]);
    const clamped = sl([2], [100], [-1]);
    const stepped = sl([1], [10], [2], [3]);
    const reversed = sl([-1], [-big], [2], [-1]);
    const whole = sl([0], [big], [1]);
    const from1 = sl([1], [big], [1]);
    const flip = sl([-1], [-big], [1], [-1]);
    const seq = b.op('Gather', [b.op('Shape', [x]), b.const(1, 'int64', [])]);
    const upTo = b.op('Slice', [b.input('cache', 'float32', [2048, 16]), b.const([0]), b.op('Unsqueeze', [seq, b.const([0])]), b.const([0])]);
    const t = infer(b);
    expect(t.get(tail)?.shape).toEqual(['b', 's', 3]);
    expect(t.get(clamped)?.shape).toEqual(['b', 's', 8]);
    expect(t.get(stepped)?.shape).toEqual(['b', 's', 3]);
    expect(t.get(reversed)?.shape).toEqual(['b', 's', 10]);
    expect(t.get(whole)?.shape).toEqual(['b', 's', 10]);
    expect(t.get(from1)?.shape).toEqual(['b', null, 10]);
    expect(t.get(flip)?.shape).toEqual(['b', 's', 10]);
    expect(t.get(upTo)?.shape).toEqual(['s', 16]);
  });

  it('infers Split from a split input, num_outputs or the output count', () => {
    const { b, x } = withX(['b', 's', 96]);
    const [a1, a2] = b.opN('Split', [x, b.const([32, 64])], { axis: -1 }, { outputs: 2 });
    const [e1, e2, e3] = b.opN('Split', [x], { axis: 2 }, { outputs: 3 });
    const [n1, n2] = b.opN('Split', [b.input('odd', 'float32', [5])], { num_outputs: 2 }, { outputs: 2 });
    const [s1] = b.opN('Split', [x], { axis: 1 }, { outputs: 2 });
    const t = infer(b);
    expect([t.get(a1)?.shape, t.get(a2)?.shape]).toEqual([['b', 's', 32], ['b', 's', 64]]);
    expect([e1, e2, e3].map((o) => t.get(o)?.shape?.[2])).toEqual([32, 32, 32]);
    expect([t.get(n1)?.shape, t.get(n2)?.shape]).toEqual([[3], [2]]);
    expect(t.get(s1)?.shape).toEqual(['b', null, 96]);
  });

  it('infers Concat, Gather, GatherElements, GatherND, Tile, Pad, Resize, TopK, reductions and Einsum', () => {
    const { b, x } = withX(['b', 's', 64]);
    const cat = b.op('Concat', [x, b.input('y', 'float32', ['b', 16, 64])], { axis: 1 });
    const emb = b.op('Gather', [b.init('table', [320, 64], new Float32Array(320 * 64)), b.input('ids', 'int64', ['b', 's'])]);
    const ge = b.op('GatherElements', [x, b.input('gi', 'int64', ['b', 's', 1])], { axis: 2 });
    const gnd = b.op('GatherND', [x, b.input('ni', 'int64', [5, 2])]);
    const tile = b.op('Tile', [x, b.const([1, 2, 3])]);
    const pad = b.op('Pad', [x, b.const([0, 1, 0, 0, 2, 0])]);
    const img = b.input('img', 'float32', [1, 3, 'h', 32]);
    const up = b.op('Resize', [img, '', b.const([1, 1, 2, 0.5], 'float32')], { mode: 'nearest' });
    const sized = b.op('Resize', [img, '', '', b.const([1, 3, 64, 64])]);
    const [vals, inds] = b.opN('TopK', [x, b.const([5])], { axis: -1 }, { outputs: 2 });
    const rm = b.op('ReduceMean', [x], { axes: [-1] });
    const rs = b.op('ReduceSum', [x, b.const([1, 2])], { keepdims: 0 });
    const am = b.op('ArgMax', [x], { axis: 2, keepdims: 0 });
    const ein = b.op('Einsum', [x, b.input('k', 'float32', ['b', 't', 64])], { equation: 'bsd,btd->bst' });
    const ein2 = b.op('Einsum', [b.input('e', 'float32', [2, 3, 4, 5])], { equation: '...ij->...ji' });
    const t = infer(b);
    expect(t.get(cat)?.shape).toEqual(['b', 's+16', 64]);
    expect(t.get(emb)).toEqual({ dtype: 'float32', shape: ['b', 's', 64] });
    expect(t.get(ge)?.shape).toEqual(['b', 's', 1]);
    expect(t.get(gnd)?.shape).toEqual([5, 64]);
    expect(t.get(tile)?.shape).toEqual(['b', '2*s', 192]);
    expect(t.get(pad)?.shape).toEqual(['b', 's+3', 64]);
    expect(t.get(up)?.shape).toEqual([1, 3, '2*h', 16]);
    expect(t.get(sized)?.shape).toEqual([1, 3, 64, 64]);
    expect(t.get(vals)?.shape).toEqual(['b', 's', 5]);
    expect(t.get(inds)).toEqual({ dtype: 'int64', shape: ['b', 's', 5] });
    expect(t.get(rm)?.shape).toEqual(['b', 's', 1]);
    expect(t.get(rs)?.shape).toEqual(['b']);
    expect(t.get(am)).toEqual({ dtype: 'int64', shape: ['b', 's'] });
    expect(t.get(ein)?.shape).toEqual(['b', 's', 't']);
    expect(t.get(ein2)?.shape).toEqual([2, 3, 5, 4]);
  });

  it('types Cast, CastLike, Shape, Size, normalizations and quantization ops', () => {
    const { b, x } = withX();
    const h = b.op('Cast', [x], { to: DT.FLOAT16 });
    const bo = b.op('Cast', [x], { to: DT.BOOL });
    const cl = b.op('CastLike', [x, b.init('ref', [1], new Float64Array(1))]);
    const sz = b.op('Size', [x]);
    const [ln, mean] = b.opN('LayerNormalization', [x, b.init('g', [64], new Float32Array(64))], { axis: -1 }, { outputs: 2 });
    const sm = b.op('Softmax', [h], { axis: -1 });
    const q = b.op('QuantizeLinear', [x, b.const(0.1, 'float32', []), b.init('zp', [], new Int8Array(1))]);
    const q8 = b.op('QuantizeLinear', [x, b.const(0.1, 'float32', [])]);
    const dq = b.op('DequantizeLinear', [q, b.init('sc', [], new Uint16Array(1), 'float16')]);
    const t = infer(b);
    expect(t.get(h)?.dtype).toBe('float16');
    expect(t.get(bo)?.dtype).toBe('bool');
    expect(t.get(cl)?.dtype).toBe('float64');
    expect(t.get(sz)).toEqual({ dtype: 'int64', shape: [] });
    expect(t.get(ln)).toEqual({ dtype: 'float32', shape: ['batch_size', 'sequence_length', 64] });
    expect(t.get(mean)?.shape).toEqual(['batch_size', 'sequence_length', 1]);
    expect(t.get(sm)).toEqual({ dtype: 'float16', shape: ['batch_size', 'sequence_length', 64] });
    expect(t.get(q)?.dtype).toBe('int8');
    expect(t.get(q8)?.dtype).toBe('uint8');
    expect(t.get(dq)).toEqual({ dtype: 'float16', shape: ['batch_size', 'sequence_length', 64] });
  });

  it('infers com.microsoft ops: MatMulNBits, GatherBlockQuantized, GroupQueryAttention, norms, rotary', () => {
    const b = new GraphBuilder();
    const ms = { domain: 'com.microsoft' };
    const x = b.input('x', 'float16', ['b', 's', 64]);
    const mm = b.op('MatMulNBits', [x, b.init('qw', [96, 2, 16], new Uint8Array(96 * 32)), b.init('qs', [96, 2], new Uint16Array(192), 'float16')],
      { K: 64, N: 96, bits: 4, block_size: 32 }, ms);
    const gbq = b.op('GatherBlockQuantized', [b.init('qe', [320, 32], new Uint8Array(320 * 32)), b.input('ids', 'int64', ['b', 's']),
      b.init('es', [320, 2], new Uint16Array(640), 'float16')], { bits: 4, block_size: 32 }, ms);
    const [gqa, pk] = b.opN('GroupQueryAttention', [x, b.input('k', 'float16', ['b', 's', 32]), b.input('v', 'float16', ['b', 's', 32])],
      { num_heads: 4, kv_num_heads: 2 }, { ...ms, outputs: 3 });
    const packed = b.op('GroupQueryAttention', [b.input('qkv', 'float16', ['b', 's', 128])], { num_heads: 4, kv_num_heads: 2 }, ms);
    const [skn, , , sum] = b.opN('SkipSimplifiedLayerNormalization', [x, x, b.init('gw', [64], new Uint16Array(64), 'float16')], {}, { ...ms, outputs: 4 });
    const rot = b.op('RotaryEmbedding', [x, b.input('pos', 'int64', ['b', 's'])], {}, ms);
    const att = b.op('Attention', [x, b.init('aw', [64, 192], new Uint16Array(64 * 192), 'float16')], { num_heads: 4 }, ms);
    const t = infer(b);
    expect(t.get(mm)).toEqual({ dtype: 'float16', shape: ['b', 's', 96] });
    expect(t.get(gbq)).toEqual({ dtype: 'float16', shape: ['b', 's', 64] });
    expect(t.get(gqa)).toEqual({ dtype: 'float16', shape: ['b', 's', 64] });
    expect(t.get(pk)?.shape).toEqual(['b', 2, null, 16]);
    expect(t.get(packed)?.shape).toEqual(['b', 's', 64]);
    expect(t.get(skn)?.shape).toEqual(['b', 's', 64]);
    expect(t.get(sum)?.shape).toEqual(['b', 's', 64]);
    expect(t.get(rot)).toEqual({ dtype: 'float16', shape: ['b', 's', 64] });
    expect(t.get(att)?.shape).toEqual(['b', 's', 64]);
  });

  it('unions If branches and picks the branch of a constant condition', () => {
    const { b, x } = withX();
    const branch = (op: string, name: string, attrs = {}) => {
      const g = new GraphBuilder(name);
      const o = g.op(op, [x], attrs);
      g.output(o, 'float32');
      return g.graph();
    };
    const cond = b.input('cond', 'bool', []);
    const y = b.op('If', [cond], { then_branch: branch('Relu', 'then'), else_branch: branch('Neg', 'else') });
    const z = b.op('If', [cond], { then_branch: branch('Relu', 'then2'), else_branch: branch('ReduceMean', 'else2', { axes: [-1] }) });
    const k = b.op('If', [b.init('always', [], new Uint8Array([0]), 'bool')], { then_branch: branch('Relu', 't3'), else_branch: branch('ReduceMean', 'e3') });
    const t = infer(b);
    expect(t.get(y)).toEqual({ dtype: 'float32', shape: ['batch_size', 'sequence_length', 64] });
    expect(t.get(z)).toEqual({ dtype: 'float32', shape: ['batch_size', 'sequence_length', null] });
    expect(t.get(k)?.shape).toEqual([1, 1, 1]);
  });

  it('leaves outputs of unknown ops unknown without throwing, and keeps going downstream', () => {
    const { b, x } = withX();
    const u = b.op('FancyOp', [x], {}, { domain: 'com.example' });
    const after = b.op('Add', [u, x]);
    const bad = b.op('Reshape', [x, b.const([7, 7])]);
    const t = infer(b);
    expect(t.get(u)).toEqual({ dtype: undefined, shape: undefined });
    expect(t.get(after)?.dtype).toBe('float32');
    expect(t.get(bad)?.shape).toEqual([7, 7]);
  });
});

describe('seeding and refinement', () => {
  it('applies concrete inputShapes and substitutes bound symbols in declared types', () => {
    const { b, x } = withX();
    const y = b.op('Relu', [x]);
    b.output(y, 'float32', ['batch_size', 'sequence_length', 64]);
    const t = infer(b, { inputShapes: { x: [1, 24, 64] } });
    expect(t.get(x)).toEqual({ dtype: 'float32', shape: [1, 24, 64] });
    expect(t.get(y)).toEqual({ dtype: 'float32', shape: [1, 24, 64] });
  });

  it('trusts existing value_info and only fills in unknowns', () => {
    const { b, x } = withX();
    const y = b.op('Relu', [x]);
    b.annotate(y, 'float32', [null, 'seq_from_exporter', 64]);
    const z = b.op('Neg', [x]);
    b.valueInfo.push(makeValueInfo(z, 'float32'));
    const t = infer(b);
    expect(t.get(y)?.shape).toEqual(['batch_size', 'seq_from_exporter', 64]);
    expect(t.get(z)?.shape).toEqual(['batch_size', 'sequence_length', 64]);
  });
});

// ---------------------------------------------------------------- PyTorch-exported fixtures

const meta = JSON.parse(readFileSync('test/fixtures/torch/meta.json', 'utf8')) as {
  models: Record<string, { file: string; num_feature_tokens: number; feature_token_id: number; inputs: { name: string; shape: Dim[] }[] }>;
};

async function fixture(name: string): Promise<{ graph: Graph; model: Awaited<ReturnType<typeof loadModel>>['model'] }> {
  const file = await loadModel(`test/fixtures/torch/${meta.models[name].file}`);
  return { graph: new Graph(file.model.graph!), model: file.model };
}

const allValues = (g: Graph): string[] => {
  const s = new Set<string>(g.types.keys());
  for (const n of g.nodes) for (const o of n.output) if (o) s.add(o);
  return [...s];
};

describe.each(['llava_tiny', 'audio_llm_tiny'])('PyTorch fixture %s', (name) => {
  it('types logits, the projector output and the token embedding, and nearly every value', async () => {
    const { graph } = await fixture(name);
    const t = inferTypes(graph);
    expect(t.get('logits')).toEqual({ dtype: 'float32', shape: ['batch_size', 'sequence_length', 320] });
    const proj = graph.nodes.filter((n) => n.name.startsWith('/multi_modal_projector/')).at(-1)!;
    expect(t.get(proj.output[0])).toEqual({ dtype: 'float32', shape: ['batch_size', meta.models[name].num_feature_tokens, 64] });
    expect(t.get('/embed_tokens/Gather_output_0')).toEqual({ dtype: 'float32', shape: ['batch_size', 'sequence_length', 64] });
    const values = allValues(graph);
    const typed = values.filter((v) => t.get(v)?.dtype && t.get(v)?.shape);
    expect(typed.length / values.length).toBeGreaterThanOrEqual(0.98);
    // Every node output gets an entry, and the graph's own type table is left alone.
    for (const n of graph.nodes) for (const o of n.output) expect(t.has(o)).toBe(true);
    expect(graph.types.has('/embed_tokens/Gather_output_0')).toBe(false);
  });

  it('runs a 700-node graph in well under 100 ms', async () => {
    const { graph } = await fixture(name);
    expect(graph.nodes.length).toBeGreaterThan(690);
    inferTypes(graph);
    let best = Infinity;
    for (let i = 0; i < 3; i++) { const t0 = performance.now(); inferTypes(graph); best = Math.min(best, performance.now() - t0); }
    expect(best).toBeLessThan(100);
  });
});

describe('cross-check against ONNX Runtime (llava_tiny)', () => {
  it('inferred concrete shapes and dtypes of ~24 intermediates match what ORT produces', async () => {
    const { graph, model } = await fixture('llava_tiny');
    const L = 24, imageToken = meta.models.llava_tiny.feature_token_id;
    const t = inferTypes(graph, { inputShapes: { pixel_values: [1, 3, 32, 32], input_ids: [1, L], attention_mask: [1, L] } });
    const candidates = graph.nodes.filter((n) => n.opType !== 'Constant').flatMap((n) => n.output)
      .filter((o) => o && o !== 'logits' && t.get(o)?.dtype && t.get(o)?.shape?.every((d) => typeof d === 'number'));
    const must = ['/multi_modal_projector/linear_2/Add_output_0', '/Where_1_output_0', '/language_model/Range_output_0',
      '/language_model/Where_1_output_0', '/language_model/layers.0/self_attn/Expand_output_0', '/language_model/layers.0/self_attn/Softmax_output_0'];
    const step = Math.floor(candidates.length / 18);
    const picked = [...new Set([...must, ...candidates.filter((_, i) => i % step === 0)])];
    expect(picked.length).toBeGreaterThanOrEqual(20);
    expect(picked.every((v) => candidates.includes(v))).toBe(true);

    const proto = model.graph!;
    const extended = create(ModelProtoSchema, {
      ...model, graph: { ...proto, output: [...proto.output, ...picked.map((v) => makeValueInfo(v, t.get(v)!.dtype!))] },
    });
    const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, extended));
    let seed = 1;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const ids = BigInt64Array.from({ length: L }, (_, i) => BigInt(i >= 2 && i < 18 ? imageToken : Math.floor(rand() * 318)));
    const out = await session.run({
      pixel_values: new ort.Tensor('float32', Float32Array.from({ length: 3 * 32 * 32 }, () => rand() - 0.5), [1, 3, 32, 32]),
      input_ids: new ort.Tensor('int64', ids, [1, L]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(L).fill(1n), [1, L]),
    });
    for (const v of picked) expect({ v, dtype: out[v].type, dims: [...out[v].dims] }).toEqual({ v, dtype: t.get(v)!.dtype, dims: t.get(v)!.shape });
    expect([...out.logits.dims]).toEqual(t.get('logits')!.shape);
  });
});
