/**
 * The weight formats against independent references: every MatMulNBits / GatherBlockQuantized node
 * ONNX Runtime executes must equal a float64 dequantize-then-matmul (gather) computed here from the
 * packed bytes; fp16 keeps its interface and its fp32 islands; calibration statistics behave.
 */
import { toBinary } from '@bufbuild/protobuf';
import ort from 'onnxruntime-node';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { describe, expect, it } from 'vitest';
import { GraphBuilder, float } from '../../src/onnx/builder.js';
import { DT, halfToFloat, typedView } from '../../src/onnx/dtype.js';
import { dequantizeBlocks, packZeroPoints, quantizeBlocks, roundEven, unpackZeroPoints } from '../../src/quantize/block-quant.js';
import { ModelEdit } from '../../src/quantize/edit.js';
import { toFloat16 } from '../../src/quantize/formats/fp16.js';
import { gatherTargets, rewriteGatherBlock } from '../../src/quantize/formats/gather-block.js';
import { nbitsTargets, rewriteMatMulNBits } from '../../src/quantize/formats/matmulnbits.js';
import { activationParams } from '../../src/quantize/formats/qdq-int8.js';
import { checkRknn } from '../../src/quantize/rknn-check.js';
import { klThreshold, RangeStats } from '../../src/quantize/stats.js';
import { mulberry32, normalFrom } from '../../src/util/prng.js';

const session = (m: ModelProto) => ort.InferenceSession.create(toBinary(ModelProtoSchema, m), { graphOptimizationLevel: 'all' });
const randn = (n: number, seed: number, std = 1) => { const r = normalFrom(mulberry32(seed)); return Float32Array.from({ length: n }, () => r() * std); };
const maxRel = (got: ArrayLike<number>, ref: ArrayLike<number>) => {
  let d = 0, s = 0;
  for (let i = 0; i < ref.length; i++) { d = Math.max(d, Math.abs(got[i] - ref[i])); s = Math.max(s, Math.abs(ref[i])); }
  return d / s;
};
const f32 = (t: ort.Tensor) => t.data as Float32Array;

describe('MatMulNBits', () => {
  const M = 5, K = 96, N = 24;
  const cases = [
    { bits: 4, block: 32, symmetric: true }, { bits: 4, block: 32, symmetric: false }, { bits: 4, block: 128, symmetric: true },
    { bits: 8, block: 32, symmetric: true }, { bits: 8, block: 128, symmetric: false }, { bits: 4, block: 16, symmetric: false },
  ] as const;
  it.each(cases)('bits $bits block $block symmetric $symmetric equals the float64 dequantize-then-matmul reference', async (p) => {
    const W = randn(K * N, 7, 0.1);
    const b = new GraphBuilder();
    b.input('A', 'float32', [M, K]);
    b.init('W', [K, N], W);
    b.op('MatMul', ['A', 'W'], {}, { outputs: ['Y'] });
    b.output('Y', 'float32', [M, N]);
    const edit = new ModelEdit(b.model(), '/');
    const [t] = nbitsTargets(edit);
    const q = await rewriteMatMulNBits(edit, t, { ...p, accuracyLevel: 0 });
    const model = edit.build();
    const node = model.graph!.node[0];
    expect(node).toMatchObject({ opType: 'MatMulNBits', domain: 'com.microsoft' });
    const kb = Math.ceil(K / p.block);
    const inits = Object.fromEntries(model.graph!.initializer.map((x) => [x.name, x]));
    expect(inits[node.input[1]].dims.map(Number)).toEqual([N, kb, (p.block * p.bits) / 8]);
    expect(inits[node.input[2]].dims.map(Number)).toEqual([N, kb]);
    expect(node.input.length).toBe(p.symmetric ? 3 : 4);
    expect(model.graph!.initializer.some((x) => x.name === 'W')).toBe(false);

    // The reference reads the bytes ORT reads (packed codes, scales, packed zero points), not the quantizer's arrays.
    const bytesOf = (name: string) => inits[name].rawData;
    const zp = p.symmetric ? new Uint8Array(N * kb).fill(1 << (p.bits - 1)) : unpackZeroPoints(bytesOf(node.input[3]), N, kb, p.bits);
    const Wdq = dequantizeBlocks({ K, N, kBlocks: kb, packed: bytesOf(node.input[1]), scales: typedView(DT.FLOAT, bytesOf(node.input[2])) as Float32Array, zeroPoints: zp }, p.bits, p.block);
    const A = randn(M * K, 11);
    const ref = new Float64Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += A[m * K + k] * Wdq[k * N + n]; ref[m * N + n] = s; }
    const y = f32((await (await session(model)).run({ A: new ort.Tensor('float32', A, [M, K]) })).Y);
    expect(maxRel(y, ref)).toBeLessThan(2e-6);

    // Round to nearest: every weight within one quantization step of its code (half a step unless clipped at the top code).
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
      const s = Math.abs(q.scales[n * kb + Math.floor(k / p.block)]);
      expect(Math.abs(W[k * N + n] - Wdq[k * N + n])).toBeLessThanOrEqual(s * (p.symmetric ? 1 : 0.5) + 1e-7);
    }
    // accuracy_level 4 (int8 activations, the CPU fast path) stays close to the exact result.
    node.attribute.find((a) => a.name === 'accuracy_level')!.i = 4n;
    const y4 = f32((await (await session(model)).run({ A: new ort.Tensor('float32', A, [M, K]) })).Y);
    expect(maxRel(y4, ref)).toBeLessThan(0.05);
  });

  it('folds Gemm alpha, transB and beta·C into MatMulNBits', async () => {
    const W = randn(N * K, 3, 0.1), C = randn(N, 4);
    const b = new GraphBuilder();
    b.input('A', 'float32', [M, K]);
    b.init('W', [N, K], W);
    b.init('C', [N], C);
    b.op('Gemm', ['A', 'W', 'C'], { transB: 1, alpha: float(0.5), beta: float(2) }, { outputs: ['Y'] });
    b.output('Y', 'float32', [M, N]);
    const edit = new ModelEdit(b.model(), '/');
    const q = await rewriteMatMulNBits(edit, nbitsTargets(edit)[0], { bits: 4, block: 32, symmetric: true, accuracyLevel: 0 });
    const Wdq = dequantizeBlocks(q, 4, 32);
    const A = randn(M * K, 5);
    const ref = Array.from({ length: M * N }, (_, i) => {
      const m = Math.floor(i / N), n = i % N;
      let s = 0; for (let k = 0; k < K; k++) s += A[m * K + k] * Wdq[k * N + n];
      return 0.5 * s + 2 * C[n];
    });
    const y = f32((await (await session(edit.build())).run({ A: new ort.Tensor('float32', A, [M, K]) })).Y);
    expect(maxRel(y, ref)).toBeLessThan(2e-6);
  });

  it('rounds half to even, as numpy and ORT do', () => {
    expect([2.5, 3.5, -2.5, -3.5, 1.4999, 0.5, -0.5, 7].map(roundEven)).toEqual([2, 4, -2, -4, 1, 0, -0, 7]);
  });

  it('packs zero points two per byte, low nibble first', () => {
    const zp = Uint8Array.from([1, 2, 3, 4, 5, 6]);
    expect([...packZeroPoints(zp, 2, 3, 4)]).toEqual([0x21, 0x03, 0x54, 0x06]);
    expect([...unpackZeroPoints(packZeroPoints(zp, 2, 3, 4), 2, 3, 4)]).toEqual([...zp]);
  });

  it('maps the largest-magnitude weight of a symmetric block exactly (Q4_0 style)', () => {
    const w = Float32Array.from({ length: 32 }, (_, i) => (i === 5 ? -3 : Math.sin(i)));
    const q = quantizeBlocks(w, 1, 32, { bits: 4, block: 32, symmetric: true });
    expect(dequantizeBlocks(q, 4, 32)[5]).toBeCloseTo(-3, 6);
  });
});

describe('GatherBlockQuantized', () => {
  it.each([{ bits: 4, symmetric: true }, { bits: 4, symmetric: false }, { bits: 8, symmetric: true }, { bits: 8, symmetric: false }] as const)(
    'bits $bits symmetric $symmetric gathers the float64 dequantized rows', async (p) => {
      const V = 40, H = 64;
      const table = randn(V * H, 9, 0.2);
      const b = new GraphBuilder();
      b.input('ids', 'int64', [1, 'n']);
      b.init('E', [V, H], table);
      b.op('Gather', ['E', 'ids'], { axis: 0 }, { outputs: ['Y'] });
      b.output('Y', 'float32', [1, 'n', H]);
      const edit = new ModelEdit(b.model(), '/');
      const q = await rewriteGatherBlock(edit, gatherTargets(edit, 32).targets[0], { ...p, block: 32 });
      const ref = dequantizeBlocks(q, p.bits, 32); // [H, V] as K×N: element (h, v) at h·V + v
      const ids = [3, 0, 39, 3, 17];
      const y = f32((await (await session(edit.build())).run({ ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) })).Y);
      const want = ids.flatMap((v) => Array.from({ length: H }, (_, h) => ref[h * V + v]));
      expect(maxRel(y, want)).toBeLessThan(1e-6);
      for (let v = 0; v < V; v++) for (let h = 0; h < H; h++) // each row within one step of the float table
        expect(Math.abs(table[v * H + h] - ref[h * V + v])).toBeLessThanOrEqual(Math.abs(q.scales[v * 2 + (h >> 5)]) + 1e-7);
    });

  it('leaves tables whose rows are not whole blocks float, with a note', () => {
    const b = new GraphBuilder();
    b.input('ids', 'int64', [1, 2]);
    b.init('E', [4, 48], new Float32Array(4 * 48));
    b.op('Gather', ['E', 'ids'], { axis: 0 }, { outputs: ['Y'] });
    b.output('Y', 'float32');
    const r = gatherTargets(new ModelEdit(b.model(), '/'), 32);
    expect(r.targets).toHaveLength(0);
    expect(r.skipped).toHaveLength(1);
  });
});

describe('fp16', () => {
  it('runs compute in float16, keeps the RMSNorm chain and Softmax in float32 and the interface float32', async () => {
    const H = 32;
    const b = new GraphBuilder();
    const x = b.input('x', 'float32', [1, 'seq', H]);
    const ms = b.op('ReduceMean', [b.op('Pow', [x, b.const(2, 'float32')])], { axes: [-1], keepdims: 1 });
    const rms = b.op('Sqrt', [b.op('Add', [ms, b.const(1e-6, 'float32')])]);
    const n = b.op('Mul', [b.init('norm', [H], randn(H, 1, 0.1).map((v) => 1 + v)), b.op('Div', [x, rms])]);
    const h = b.op('MatMul', [n, b.init('w', [H, H], randn(H * H, 2, 0.2))]);
    const s = b.op('Add', [b.op('MatMul', [h, b.op('Transpose', [h], { perm: [0, 2, 1] })]), b.op('Where', [b.input('mask', 'bool', [1, 'seq', 'seq']), b.const(0, 'float32'), b.const(-1e9, 'float32')])]);
    b.op('MatMul', [b.op('Softmax', [s], { axis: -1 }), h], {}, { outputs: ['y'] });
    b.output('y', 'float32', [1, 'seq', H]);
    const float = b.model();
    const edit = new ModelEdit(float, '/');
    const r = await toFloat16(edit);
    const half = edit.build({ dropFloatValueInfo: true });
    expect(r.fp16Nodes).toBeGreaterThan(0);
    const g = half.graph!;
    expect(g.input.map((i) => i.type?.value.value && (i.type.value.value as { elemType: number }).elemType)).toEqual([DT.FLOAT, DT.BOOL]);
    expect((g.output[0].type!.value.value as { elemType: number }).elemType).toBe(DT.FLOAT);
    const producers = new Map(g.node.flatMap((nd) => nd.output.map((o) => [o, nd])));
    for (const op of ['Pow', 'ReduceMean', 'Sqrt', 'Softmax']) {
      const nd = g.node.find((x) => x.opType === op)!;
      const inProducer = producers.get(nd.input[0]);
      // a float32 island: its input is the graph input, a float32 op, or a Cast to float32
      expect(!inProducer || inProducer.opType !== 'Cast' || inProducer.attribute[0].i === BigInt(DT.FLOAT)).toBe(true);
    }
    const addEps = g.node.find((x) => x.opType === 'Add' && x.input[0] === g.node.find((y) => y.opType === 'ReduceMean')!.output[0])!;
    expect(addEps).toBeDefined(); // the eps add grew into the fp32 island: it reads ReduceMean directly, no Cast
    const w = g.initializer.find((t) => t.name.startsWith('w'))!;
    expect(w.dataType).toBe(DT.FLOAT16);
    const big = g.initializer.filter((t) => t.dataType === DT.FLOAT16 && t.dims.length === 0).map((t) => halfToFloat(t.rawData[0] | (t.rawData[1] << 8)));
    expect(big).toContain(-65504); // the -1e9 mask constant saturated, not -inf

    const seq = 6;
    const feeds = {
      x: new ort.Tensor('float32', randn(seq * H, 3), [1, seq, H]),
      mask: new ort.Tensor('bool', Uint8Array.from({ length: seq * seq }, (_, i) => Number(i % seq <= Math.floor(i / seq))), [1, seq, seq]),
    };
    const [a, c] = [f32((await (await session(float)).run(feeds)).y), f32((await (await session(half)).run(feeds)).y)];
    expect(maxRel(c, a)).toBeLessThan(5e-3);
    expect(checkRknn(half).ok).toBe(true);
  });
});

describe('calibration statistics', () => {
  it('min-max, percentile and KL ranges', () => {
    const st = new RangeStats();
    const x = randn(100_000, 4);
    x[0] = 40; x[1] = -35; // outliers
    st.observe(x);
    st.histogram(x);
    expect(st.range('minmax')).toEqual({ min: -35, max: 40 });
    const p = st.range('percentile', 99.9);
    expect(p.max).toBeGreaterThan(2.5); expect(p.max).toBeLessThan(4.5);
    expect(p.min).toBeLessThan(-2.5); expect(p.min).toBeGreaterThan(-4.5);
    const kl = st.range('entropy');
    expect(kl.max).toBeLessThan(40); expect(kl.max).toBeGreaterThan(2);
  });

  it('KL keeps the whole range of a uniform distribution', () => {
    expect(klThreshold(new Float64Array(2048).fill(1))).toBeGreaterThan(0.95);
  });

  it('int8 activation parameters represent zero exactly', () => {
    for (const r of [{ min: -1, max: 3 }, { min: 0.5, max: 2 }, { min: -4, max: -1 }]) {
      const { scale, zp } = activationParams(r);
      expect(zp).toBeGreaterThanOrEqual(-128); expect(zp).toBeLessThanOrEqual(127);
      expect(Math.round(0 / scale) + zp - zp).toBe(0);
      expect((127 - zp) * scale).toBeGreaterThanOrEqual(Math.max(r.max, 0) - scale);
      expect((-128 - zp) * scale).toBeLessThanOrEqual(Math.min(r.min, 0) + scale);
    }
  });
});

describe('rknn-toolkit2 rules', () => {
  it('flags com.microsoft ops, opset > 19 and int64 inputs', () => {
    const b = new GraphBuilder();
    b.input('ids', 'int64', [1, 2]);
    b.init('E', [4, 32], new Uint8Array(4 * 16));
    b.init('S', [4, 1], new Float32Array(4));
    b.op('GatherBlockQuantized', ['E', 'ids', 'S'], { bits: 4, block_size: 32 }, { outputs: ['Y'], domain: 'com.microsoft' });
    b.output('Y', 'float32');
    const r = checkRknn(b.model({ opset: 21, msOpset: 1 }));
    expect(r.ok).toBe(false);
    expect(r.problems).toHaveLength(3);
  });
});
