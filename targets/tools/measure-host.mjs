#!/usr/bin/env node
/**
 * Measures the few host numbers targets/host.json carries: sustained memory read bandwidth (one thread
 * and all threads, Node worker_threads summing a 256 MiB Float64Array per thread) and fp32 multiply-add
 * throughput of plain JS (a floor, not the machine's SIMD peak), and a 1024^3 fp32 MatMul through ONNX
 * Runtime's CPU EP on all threads (needs `npm run build` first). Prints JSON; paste into host.json.
 *   node targets/tools/measure-host.mjs [--mib 256] [--runs 5]
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { availableParallelism, cpus, totalmem } from 'node:os';

if (!isMainThread) {
  const { mib, runs } = workerData;
  const a = new Float64Array((mib << 20) / 8);
  for (let i = 0; i < a.length; i++) a[i] = i & 7;
  parentPort.postMessage('ready');
  parentPort.once('message', () => {
    let best = Infinity, sink = 0;
    for (let r = 0; r < runs; r++) {
      const t0 = process.hrtime.bigint();
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < a.length; i += 4) { s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3]; }
      sink += s0 + s1 + s2 + s3;
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    parentPort.postMessage({ seconds: best, bytes: a.byteLength, sink });
  });
} else {
  const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? Number(process.argv[i + 1]) : d; };
  const mib = arg('--mib', 256), runs = arg('--runs', 5);
  async function read(threads) {
    const ws = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url), { workerData: { mib, runs } }));
    await Promise.all(ws.map((w) => new Promise((r) => w.once('message', r))));
    const results = await Promise.all(ws.map((w) => new Promise((r) => { w.once('message', r); w.postMessage('go'); })));
    await Promise.all(ws.map((w) => w.terminate()));
    // All threads start together; the slowest bounds the aggregate rate.
    return results.reduce((n, x) => n + x.bytes, 0) / Math.max(...results.map((x) => x.seconds)) / 1e9;
  }
  const n = availableParallelism();
  const fma = () => {
    const x = new Float32Array(4096).fill(1.0001), y = new Float32Array(4096).fill(0.5);
    let best = Infinity;
    for (let r = 0; r < runs; r++) {
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < 2000; k++) for (let i = 0; i < 4096; i++) y[i] = y[i] * 0.999 + x[i];
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    return (2 * 4096 * 2000) / best / 1e9;
  };
  // fp32 GEMM through ONNX Runtime's CPU EP (MLAS): what the ort-cpu backend reaches on a dense matmul.
  const ortGflops = async () => {
    const ort = (await import('onnxruntime-node')).default;
    const { GraphBuilder } = await import(new URL('../../dist/onnx/builder.js', import.meta.url));
    const { toBinary } = await import('@bufbuild/protobuf');
    const { ModelProtoSchema } = await import('onnx-buf');
    const N = 1024, b = new GraphBuilder('mm');
    const w = b.init('w', [N, N], Float32Array.from({ length: N * N }, (_, i) => (i % 13) / 13));
    b.op('MatMul', [b.input('x', 'float32', [N, N]), w], {}, { outputs: ['y'] });
    b.output('y', 'float32', [N, N]);
    const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, b.model({ opset: 17 })), { intraOpNumThreads: n });
    const x = new ort.Tensor('float32', new Float32Array(N * N).fill(0.5), [N, N]);
    await s.run({ x });
    let best = Infinity;
    for (let r = 0; r < runs; r++) { const t0 = process.hrtime.bigint(); await s.run({ x }); best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9); }
    await s.release();
    // Per-call overhead: a one-element Add, median of 2000 runs.
    const a = new GraphBuilder('add');
    a.op('Add', [a.input('x', 'float32', [1]), a.input('z', 'float32', [1])], {}, { outputs: ['y'] });
    a.output('y', 'float32', [1]);
    const t = await ort.InferenceSession.create(toBinary(ModelProtoSchema, a.model({ opset: 17 })));
    const one = new ort.Tensor('float32', new Float32Array([1]), [1]);
    const times = [];
    for (let i = 0; i < 2000; i++) { const t0 = process.hrtime.bigint(); await t.run({ x: one, z: one }); times.push(Number(process.hrtime.bigint() - t0) / 1e6); }
    await t.release();
    overheadMs = times.sort((p, q) => p - q)[1000];
    return (2 * N ** 3) / best / 1e9;
  };
  let overheadMs = NaN;
  console.log(JSON.stringify({
    cpu: cpus()[0]?.model, threads: n, totalBytes: totalmem(),
    readGBps1: +(await read(1)).toFixed(1), readGBpsAll: +(await read(n)).toFixed(1), jsGflops1: +fma().toFixed(2), ortFp32GflopsAll: +(await ortGflops()).toFixed(1), ortRunOverheadMs: +overheadMs.toFixed(3),
    date: new Date().toISOString().slice(0, 10), node: process.version,
  }, null, 2));
}
