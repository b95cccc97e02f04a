#!/usr/bin/env node
/**
 * Prints the host numbers behind targets/host.json as JSON, through the same library as
 * `nanomind bench --calibrate` (src/compile/calibrate.ts; needs `npm run build` first): sustained memory
 * read bandwidth (one thread and all threads, Node worker_threads summing a --mib MiB Float64Array per
 * thread), a 1024^3 fp32 MatMul and the same product as a 4-bit MatMulNBits with accuracy_level 4
 * (int8 compute) through ONNX Runtime's CPU EP on all threads, and the median session.run overhead; plus
 * the fp32 multiply-add throughput of plain JS (a floor, not the machine's SIMD peak). Best of --runs.
 * `nanomind bench --calibrate` writes a whole profile instead.
 *   node targets/tools/measure-host.mjs [--mib 256] [--runs 5]
 */
import { availableParallelism, cpus, totalmem } from 'node:os';

const { measureHost, measureReadGBps } = await import(new URL('../../dist/compile/calibrate.js', import.meta.url).href);
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? Number(process.argv[i + 1]) : d; };
const mib = arg('--mib', 256), runs = arg('--runs', 5);
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

const readGBps1 = await measureReadGBps(1, mib, runs);
const m = await measureHost({ mib, runs, threads: n });
console.log(JSON.stringify({
  cpu: cpus()[0]?.model, threads: n, totalBytes: totalmem(),
  readGBps1: +readGBps1.toFixed(1), readGBpsAll: +m.readGBps.toFixed(1), jsGflops1: +fma().toFixed(2),
  ortFp32GflopsAll: +m.fp32Gflops.toFixed(1), ortInt8GopsAll: +m.int8Gops.toFixed(1), ortRunOverheadMs: +m.launchOverheadMs.toFixed(3),
  date: new Date().toISOString().slice(0, 10), node: process.version,
}, null, 2));
