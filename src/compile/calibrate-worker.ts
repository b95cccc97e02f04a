/**
 * Worker-thread entry of the memory-read measurement (./calibrate.ts): fills its own `mib` MiB
 * Float64Array, says `ready`, and on each `go` sums it once untimed and then `runs` times with four
 * accumulators, replying with the fastest pass. All workers are told `go` together, so the slowest one
 * bounds the aggregate rate.
 *
 *   main → worker: workerData {mib, runs}, then 'go'
 *   worker → main: 'ready', then {seconds, bytes, sink}
 */
import { parentPort, workerData } from 'node:worker_threads';

export interface ReadWorkerData { readonly mib: number; readonly runs: number }
/** The fastest pass; `sink` keeps the sums alive so the loop is not optimized away. */
export interface ReadResult { readonly seconds: number; readonly bytes: number; readonly sink: number }

if (!parentPort) throw new Error('calibrate-worker.js runs as a worker thread (see calibrate.ts)');
const port = parentPort;
const { mib, runs } = workerData as ReadWorkerData;

const a = new Float64Array((mib * 2 ** 20) / 8);
for (let i = 0; i < a.length; i++) a[i] = i & 7;
port.postMessage('ready');
// `on`, not `once`: the worker stays until the main thread terminates it, so an exit means a crash.
port.on('message', () => {
  // One untimed pass first, so that even `runs: 1` times the optimized loop, not the interpreter.
  let sink = sum(a);
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    sink += sum(a);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  port.postMessage({ seconds: best, bytes: a.byteLength, sink } satisfies ReadResult);
});

function sum(a: Float64Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (let i = 0; i < a.length; i += 4) { s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3]; }
  return s0 + s1 + s2 + s3;
}
