/**
 * Measures this machine and returns a `host` target profile (the shape of targets/host.json) in which
 * every number is either measured here, derived from those measurements, a stated assumption, or null
 * and marked unmeasured. `nanomind bench --calibrate` writes it; `compile --target ./host.json` uses it.
 *
 * What is measured, on `threads` threads (default: all of `os.availableParallelism()`):
 * - memory read GB/s: one worker thread per thread sums its own `mib` MiB Float64Array (./calibrate-worker.ts);
 *   best of `runs` passes per worker, and the slowest worker bounds the aggregate rate;
 * - fp32 GFLOPS: a 1024×1024×1024 MatMul through ONNX Runtime's CPU EP (MLAS), best of `runs`;
 * - int8 GOPS: the same shape as com.microsoft MatMulNBits, 4-bit weights in blocks of 128 with
 *   accuracy_level 4 (activations quantized to int8, int8 dot products): the kernel nanomind's w4/w8a16
 *   CPU bricks run, and what `computeDtype` calls int8 on a CPU; best of `runs`;
 * - launch overhead: the median `session.run` of a one-element Add over 2000 calls;
 * - node overhead: a chain of NODE_CHAIN small Adds against one Add, the difference per extra node (the
 *   kernel dispatch a real brick pays per node; the cost model multiplies it by the brick's node count);
 * - element cost: the same chain on [WIDE_ROWS, 64], per node and element beyond the node overhead;
 * - tensor overhead: TENSOR_FAN inputs each through one Neg to its own output, against one, the difference
 *   per extra input or output once the extra nodes are taken off (feed / fetch marshalling);
 * - the runtime's own fixed costs (./calibrate-runtime.ts): the generation loop per token, its prompt step,
 *   and one image's preprocessing;
 * - weight streaming: one-row MatMuls over 1024 × 1024 fp32 weights (64 MiB in all) through ORT, best of
 *   `runs`: the rate a weight-bound decode step reaches; memoryEfficiency is it over the read rate.
 * None of these runs a model `bench --against-plan` later measures: a plan is predicted from them, not fit
 * to it.
 * Each timed ORT run follows one untimed warm-up. Power, battery and storage are not measured (null).
 */
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import { mkdir, stat } from 'node:fs/promises';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { fail } from '../errors.js';
import { readJsonFile, writeJsonAtomic } from '../formats/json-file.js';
import { GraphBuilder } from '../onnx/builder.js';
import { ORT_LOG } from '../onnx/ort-log.js';
import type { ReadResult, ReadWorkerData } from './calibrate-worker.js';
import { checkTarget, TARGET_FORMAT, TARGET_VERSION, type TargetProfile } from './targets.js';
import { compiledWorker } from '../util/worker-file.js';
import { measureRuntime, PREPROCESS_FROM, PREPROCESS_TO } from './calibrate-runtime.js';

type Ort = typeof import('onnxruntime-node');

export interface CalibrateOptions {
  /** MiB each memory-read worker sums (default 256). */
  readonly mib?: number;
  /** Timed runs per measurement; the best is kept (default 5). */
  readonly runs?: number;
  /** Threads for the read workers and ORT's intra-op pool (default `os.availableParallelism()`). */
  readonly threads?: number;
  readonly onStage?: (stage: string) => void;
}

/** The raw numbers behind a calibrated profile. */
export interface HostMeasurements {
  readonly readGBps: number;
  readonly fp32Gflops: number;
  readonly int8Gops: number;
  readonly launchOverheadMs: number;
  readonly nodeOverheadMs: number;
  readonly tensorOverheadMs: number;
  readonly nodeElementNs: number;
  readonly tokenLoopMs: number;
  readonly prefillLoopMs: number;
  /** Weight-streaming GB/s of one-row fp32 MatMuls (a decode step's shape) through ORT. */
  readonly weightGBps: number;
  readonly imagePreprocessMs: number;
  readonly imagePreprocessMsPerMpx: number;
}

/** MatMul size of the compute measurements (M = K = N). */
export const MATMUL_N = 1024;
/** MatMulNBits block size of the int8 measurement. */
export const NBITS_BLOCK = 128;
const LAUNCH_CALLS = 2000;
/** Adds in the node-overhead chain, and inputs (= outputs) of the tensor-overhead model. */
export const NODE_CHAIN = 256, TENSOR_FAN = 32;
/** Rows of the wide Add chain (× 64 columns): about a prefill's tokens × a small hidden size. */
const WIDE_ROWS = 128;
const SMALL_CALLS = 300;

const positiveInt = (name: string, v: number) => {
  if (!(Number.isSafeInteger(v) && v >= 1)) throw fail('E_BAD_OPTION', `${name} must be an integer ≥ 1, got ${v}`);
  return v;
};

export async function calibrateHost(o: CalibrateOptions = {}): Promise<TargetProfile> {
  const mib = positiveInt('mib', o.mib ?? 256);
  const runs = positiveInt('runs', o.runs ?? 5);
  const cores = availableParallelism();
  const threads = positiveInt('threads', o.threads ?? cores);
  const stage = o.onStage ?? (() => {});
  const m = await measureHost({ mib, runs, threads, stage });
  const ort = await loadOrt();
  return hostProfile(m, { mib, runs, threads, cores, ortVersion: ort.env.versions.node ?? ort.env.versions.common });
}

/** Runs the four measurements (exported for targets/tools/measure-host.mjs). */
export async function measureHost(o: { mib: number; runs: number; threads: number; stage?: (s: string) => void }): Promise<HostMeasurements> {
  const stage = o.stage ?? (() => {});
  stage('memory read');
  const readGBps = await measureReadGBps(o.threads, o.mib, o.runs);
  const ort = await loadOrt();
  stage('fp32 matmul');
  const fp32Gflops = await matmulGops(ort, fp32MatMul(), o.threads, o.runs);
  stage('int8 matmul');
  const int8Gops = await matmulGops(ort, nbitsMatMul(), o.threads, o.runs);
  stage('launch overhead');
  const launchOverheadMs = await launchOverhead(ort);
  stage('node and tensor overhead');
  const { nodeOverheadMs, tensorOverheadMs, nodeElementNs } = await dispatchOverheads(ort);
  stage('runtime loop and image preprocessing');
  const rt = await measureRuntime({ runs: o.runs, threads: o.threads });
  stage('weight streaming');
  const weightGBps = await weightStreaming(ort, o.threads, o.runs, nodeOverheadMs);
  return { readGBps, fp32Gflops, int8Gops, launchOverheadMs, nodeOverheadMs, tensorOverheadMs, nodeElementNs, ...rt, weightGBps };
}

let loading: Promise<Ort> | undefined;
const loadOrt = (): Promise<Ort> =>
  (loading ??= import('onnxruntime-node').then((m) => ((m as { default?: Ort }).default ?? m) as Ort));

const workerFile = (): URL => compiledWorker(import.meta.url, './calibrate-worker.js', '../../dist/compile/calibrate-worker.js', 'calibration worker');

/** Aggregate read GB/s of `threads` workers each summing `mib` MiB, started together. */
export async function measureReadGBps(threads: number, mib: number, runs: number): Promise<number> {
  const file = workerFile();
  const workerData: ReadWorkerData = { mib, runs };
  const ws = Array.from({ length: threads }, () => new Worker(file, { workerData }));
  // A worker that dies (out of memory, a crash) fails whatever is waiting on it.
  const died = new Promise<never>((_, reject) => {
    for (const w of ws) {
      w.once('error', (e) => reject(fail('E_WORKER', `a calibration worker failed: ${e.message}`, undefined, e)));
      w.once('exit', (code) => reject(fail('E_WORKER', `a calibration worker exited early (code ${code})`)));
    }
  });
  died.catch(() => {});
  const next = <T>(w: Worker) => new Promise<T>((resolve) => w.once('message', resolve));
  try {
    await Promise.race([Promise.all(ws.map((w) => next<'ready'>(w))), died]);
    const results = await Promise.race([Promise.all(ws.map((w) => { const r = next<ReadResult>(w); w.postMessage('go'); return r; })), died]);
    return results.reduce((n, x) => n + x.bytes, 0) / Math.max(...results.map((x) => x.seconds)) / 1e9;
  } finally {
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

interface MatMulModel { readonly bytes: Uint8Array; readonly ops: number }

/** Y[N,N] = X[N,N] · W[N,N] in fp32. */
function fp32MatMul(): MatMulModel {
  const N = MATMUL_N, b = new GraphBuilder('calibrate_fp32');
  const data = new Float32Array(N * N);
  for (let i = 0; i < data.length; i++) data[i] = (i % 13) / 13;
  b.op('MatMul', [b.input('x', 'float32', [N, N]), b.init('w', [N, N], data)], {}, { outputs: ['y'] });
  b.output('y', 'float32', [N, N]);
  return { bytes: toBinary(ModelProtoSchema, b.model({ opset: 17 })), ops: 2 * N ** 3 };
}

/** The same product with W as 4-bit blocks (MatMulNBits, accuracy_level 4: int8 activations and dot products). */
function nbitsMatMul(): MatMulModel {
  const N = MATMUL_N, K = MATMUL_N, kb = K / NBITS_BLOCK, blob = NBITS_BLOCK / 2;
  const b = new GraphBuilder('calibrate_int8');
  const q = new Uint8Array(N * kb * blob);
  for (let i = 0; i < q.length; i++) q[i] = (i * 37) & 0xff;
  const scales = new Float32Array(N * kb).fill(0.01);
  b.op('MatMulNBits', [b.input('x', 'float32', [N, K]), b.init('b', [N, kb, blob], q), b.init('scales', [N * kb], scales)],
    { K, N, bits: 4, block_size: NBITS_BLOCK, accuracy_level: 4 }, { outputs: ['y'], domain: 'com.microsoft' });
  b.output('y', 'float32', [N, N]);
  return { bytes: toBinary(ModelProtoSchema, b.model({ opset: 17, msOpset: 1 })), ops: 2 * N * K * N };
}

/** The ort-cpu backend's session options; `threads` undefined leaves the intra-op pool to ORT, as the backend does. */
const options = (threads?: number): InferenceSession.SessionOptions => ({
  ...ORT_LOG, executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1,
  ...(threads ? { intraOpNumThreads: threads } : {}),
});

/** Best-of-`runs` G(FL)OPS of a one-node matmul model, after one warm-up. */
async function matmulGops(ort: Ort, m: MatMulModel, threads: number, runs: number): Promise<number> {
  const s = await ort.InferenceSession.create(m.bytes, options(threads));
  try {
    const x = new ort.Tensor('float32', new Float32Array(MATMUL_N * MATMUL_N).fill(0.5), [MATMUL_N, MATMUL_N]);
    await s.run({ x });
    let best = Infinity;
    for (let r = 0; r < runs; r++) {
      const t0 = process.hrtime.bigint();
      await s.run({ x });
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    return m.ops / best / 1e9;
  } finally {
    await s.release();
  }
}

/** Median ms of `session.run` on a one-element Add: the fixed cost of one brick call. */
async function launchOverhead(ort: Ort): Promise<number> {
  const b = new GraphBuilder('calibrate_launch');
  b.op('Add', [b.input('x', 'float32', [1]), b.input('z', 'float32', [1])], {}, { outputs: ['y'] });
  b.output('y', 'float32', [1]);
  const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, b.model({ opset: 17 })), options());
  try {
    const one: Tensor = new ort.Tensor('float32', new Float32Array([1]), [1]);
    await s.run({ x: one, z: one });
    const times: number[] = [];
    for (let i = 0; i < LAUNCH_CALLS; i++) {
      const t0 = process.hrtime.bigint();
      await s.run({ x: one, z: one });
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return times.sort((p, q) => p - q)[LAUNCH_CALLS / 2];
  } finally {
    await s.release();
  }
}

/** Median ms of `calls` runs of a session after one warm-up. */
async function medianRun(s: InferenceSession, feeds: Record<string, Tensor>, calls: number): Promise<number> {
  await s.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times.sort((p, q) => p - q)[calls >> 1]!;
}

/** A chain of `n` Adds of a [rows, 64] input with a constant: n kernel dispatches, rows × 64 elements each. */
function addChain(n: number, rows = 1): Uint8Array {
  const b = new GraphBuilder(`calibrate_chain_${n}_${rows}`);
  let x = b.input('x', 'float32', [rows, 64]);
  const c = b.init('c', [rows, 64], new Float32Array(rows * 64).fill(1e-3));
  for (let i = 0; i < n; i++) x = b.op('Add', [x, c], {}, i === n - 1 ? { outputs: ['y'] } : {});
  b.output('y', 'float32', [rows, 64]);
  return toBinary(ModelProtoSchema, b.model({ opset: 17 }));
}

/** `n` inputs, each through one Neg to its own output. */
function fan(n: number): Uint8Array {
  const b = new GraphBuilder(`calibrate_fan_${n}`);
  for (let i = 0; i < n; i++) {
    b.op('Neg', [b.input(`x${i}`, 'float32', [1, 64])], {}, { outputs: [`y${i}`] });
    b.output(`y${i}`, 'float32', [1, 64]);
  }
  return toBinary(ModelProtoSchema, b.model({ opset: 17 }));
}

/**
 * Per-node and per-tensor fixed costs of a call, and the cost per element a node touches, from
 * differences between small models (never negative). The last is what a prefill's element-wise nodes
 * (Add, Mul, Softmax, norms, RoPE) cost beyond their dispatch: the FLOP count has only the MatMuls.
 */
async function dispatchOverheads(ort: Ort): Promise<{ nodeOverheadMs: number; tensorOverheadMs: number; nodeElementNs: number }> {
  const time = async (bytes: Uint8Array, inputs: number, rows = 1) => {
    // One intra-op thread: these models have nothing to split, and a pool's wake-up would be counted per node.
    const s = await ort.InferenceSession.create(bytes, options(1));
    try {
      const feeds = Object.fromEntries(s.inputNames.slice(0, inputs).map((n) => [n, new ort.Tensor('float32', new Float32Array(rows * 64).fill(0.5), [rows, 64])]));
      return await medianRun(s, feeds, SMALL_CALLS);
    } finally {
      await s.release();
    }
  };
  const one = await time(addChain(1), 1), chain = await time(addChain(NODE_CHAIN), 1);
  const nodeOverheadMs = Math.max(0, (chain - one) / (NODE_CHAIN - 1));
  const fan1 = await time(fan(1), 1), fanN = await time(fan(TENSOR_FAN), TENSOR_FAN);
  const tensorOverheadMs = Math.max(0, ((fanN - fan1) / (TENSOR_FAN - 1) - nodeOverheadMs) / 2);
  const wide = (await time(addChain(NODE_CHAIN, WIDE_ROWS), 1, WIDE_ROWS) - await time(addChain(1, WIDE_ROWS), 1, WIDE_ROWS)) / (NODE_CHAIN - 1);
  const nodeElementNs = Math.max(0, (wide - nodeOverheadMs) / (WIDE_ROWS * 64) * 1e6);
  return { nodeOverheadMs, tensorOverheadMs, nodeElementNs };
}

/** The weight-streaming measurement: a chain of GEMV_CHAIN one-row MatMuls over GEMV_H × GEMV_H fp32 weights
 *  (4 MiB each, 64 MiB in all: layer-sized matrices beyond the caches, read once per run as a decode step
 *  reads a model's layers). */
const GEMV_H = 1024, GEMV_CHAIN = 16;

/**
 * GB/s at which ORT streams fp32 weights through one-row MatMuls (best of `runs`, the chain's node dispatch
 * taken off): what a decode step's weight reads reach. Over the read rate it is the memoryEfficiency the
 * cost model applies to weight-bound calls (the read test is a JS sum, so the ratio may exceed 1).
 */
async function weightStreaming(ort: Ort, threads: number, runs: number, nodeOverheadMs: number): Promise<number> {
  const b = new GraphBuilder('calibrate_gemv');
  let x = b.input('x', 'float32', [1, GEMV_H]);
  for (let k = 0; k < GEMV_CHAIN; k++) {
    const w = new Float32Array(GEMV_H * GEMV_H);
    for (let i = 0; i < w.length; i++) w[i] = (((i + k) % 11) - 5) / (8 * GEMV_H);
    x = b.op('MatMul', [x, b.init(`w${k}`, [GEMV_H, GEMV_H], w)], {}, k === GEMV_CHAIN - 1 ? { outputs: ['y'] } : {});
  }
  b.output('y', 'float32', [1, GEMV_H]);
  const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, b.model({ opset: 17 })), options(threads));
  try {
    const input = new ort.Tensor('float32', new Float32Array(GEMV_H).fill(0.5), [1, GEMV_H]);
    await s.run({ x: input });
    let t = Infinity;
    for (let r = 0; r < Math.max(runs, 5); r++) {
      const t0 = process.hrtime.bigint();
      await s.run({ x: input });
      t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return (GEMV_CHAIN * GEMV_H * GEMV_H * 4) / Math.max(t - GEMV_CHAIN * nodeOverheadMs, 1e-3) / 1e6;
  } finally {
    await s.release();
  }
}

const round = (v: number, d: number) => Number(v.toFixed(d));

/** The profile around the measurements; checked by `checkTarget` before it is returned. */
export function hostProfile(m: HostMeasurements, o: { mib: number; runs: number; threads: number; cores: number; ortVersion: string; date?: Date }): TargetProfile {
  // The overheads measured as differences may be 0 (within noise); the rates may not.
  const mayBeZero = new Set(['nodeOverheadMs', 'tensorOverheadMs', 'nodeElementNs', 'tokenLoopMs', 'prefillLoopMs', 'imagePreprocessMs', 'imagePreprocessMsPerMpx']);
  for (const [k, v] of Object.entries(m))
    if (!(Number.isFinite(v) && (v > 0 || (v === 0 && mayBeZero.has(k))))) throw fail('E_CALIBRATE', `the ${k} measurement is not a positive number (${v})`, { hint: 'run it again, with more --runs' });
  const cpu = cpus()[0]?.model?.trim() || 'unknown CPU';
  const date = (o.date ?? new Date()).toISOString();
  const t = `${o.threads} thread${o.threads === 1 ? '' : 's'}`;
  const profile = {
    format: TARGET_FORMAT,
    version: TARGET_VERSION,
    name: 'host',
    title: `This machine (${cpu}, ONNX Runtime CPU)`,
    default: true,
    soc: `unknown (${cpu}, ${o.cores} threads)`,
    sources: {
      measured: {
        kind: 'measurement',
        title: `Measured by \`nanomind bench --calibrate\` on ${date}, Node ${process.version}, onnxruntime-node ${o.ortVersion}, ${t}: best of ${o.runs} runs`,
        note: `memory: ${o.mib} MiB read per thread; matmuls ${MATMUL_N}^3 after one warm-up; launch overhead: median of ${LAUNCH_CALLS} calls`,
      },
      derived: { kind: 'derived', title: 'Computed from the measurements named in the note' },
      carried: { kind: 'assumption', title: 'Not measured by calibrate (it runs no model): the ratio of the shipped targets/host.json, where a Qwen2-0.5B-shaped decode read 24.8 of 31.1 GB/s' },
      assumption: { kind: 'assumption', title: 'Policy parameter, not a measurement' },
      unmeasured: { kind: 'unmeasured', title: 'Not measured by `nanomind bench --calibrate` (no power meter, battery or storage test): left null' },
    },
    memory: {
      totalBytes: { value: totalmem(), unit: 'B', source: 'measured', note: 'os.totalmem()' },
      peakGBps: { value: round(m.readGBps, 1), unit: 'GB/s', source: 'measured', note: `best sustained read (${t} summing ${o.mib} MiB each); the true DRAM peak is not known` },
      sustainedGBps: { value: round(m.readGBps, 1), unit: 'GB/s', source: 'measured' },
    },
    storage: { readMBps: { value: null, unit: 'MB/s', source: 'unmeasured' } },
    accelerators: [{
      id: 'cpu', kind: 'cpu', title: `${o.cores} threads (${cpu})`, backend: 'ort-cpu',
      cores: { value: o.cores, source: 'measured', note: 'os.availableParallelism()' },
      peakGops: {
        fp32: { value: round(m.fp32Gflops, 1), unit: 'GFLOPS', source: 'measured', note: `${MATMUL_N}^3 fp32 MatMul through ORT's CPU EP, ${t} (an achieved rate, so computeEfficiency is 1)` },
        int8: { value: round(m.int8Gops, 1), unit: 'GOPS', source: 'measured', note: `${MATMUL_N}^3 MatMulNBits, 4-bit weights in blocks of ${NBITS_BLOCK}, accuracy_level 4 (int8 activations), ${t}` },
      },
      computeEfficiency: { value: 1, source: 'derived', note: 'the peaks above are achieved rates' },
      memoryEfficiency: { value: round(m.weightGBps / m.readGBps, 3), source: 'derived', note: `ORT streaming fp32 weights through ${GEMV_CHAIN} one-row MatMuls of ${GEMV_H}×${GEMV_H} (${round(m.weightGBps, 1)} GB/s, best of runs, dispatch taken off) over the read rate: what a weight-bound decode step reaches (may exceed 1: the read test is a JS sum)` },
      launchOverheadMs: { value: round(m.launchOverheadMs, 4), unit: 'ms', source: 'measured', note: `median session.run of a one-element Add over ${LAUNCH_CALLS} calls` },
      nodeOverheadMs: { value: round(m.nodeOverheadMs, 5), unit: 'ms', source: 'measured', note: `a chain of ${NODE_CHAIN} Adds on [1, 64] against one, per extra node (median of ${SMALL_CALLS} runs each)` },
      nodeElementNs: { value: round(m.nodeElementNs, 4), unit: 'ns', source: 'measured', note: `the Add chain on [${WIDE_ROWS}, 64] against [1, 64], per node and element (medians)` },
      tensorOverheadMs: { value: round(m.tensorOverheadMs, 5), unit: 'ms', source: 'measured', note: `${TENSOR_FAN} inputs → Neg → ${TENSOR_FAN} outputs against one, per extra input or output, the extra nodes taken off` },
      activePowerW: { value: null, unit: 'W', source: 'unmeasured' },
      formats: ['fp32', 'w8a8', 'w8a16', 'w4a16-g32', 'w4a16-g128'],
      staticShapes: false,
      // Only when the usable CPUs are all of them, so that the ids are 0..n-1.
      ...(o.cores === cpus().length ? { cpuList: o.cores === 1 ? '0' : `0-${o.cores - 1}` } : {}),
    }],
    power: {
      idleW: { value: null, unit: 'W', source: 'unmeasured' },
      cameraW: { value: null, unit: 'W', source: 'unmeasured' },
      microphoneW: { value: null, unit: 'W', source: 'unmeasured' },
    },
    battery: {
      capacityMah: { value: null, unit: 'mAh', source: 'unmeasured' },
      voltage: { value: null, unit: 'V', source: 'unmeasured' },
      converterEfficiency: { value: null, source: 'unmeasured' },
    },
    powerPolicy: {
      highPercent: { value: 50, unit: '%', source: 'assumption' },
      lowPercent: { value: 15, unit: '%', source: 'assumption' },
    },
    runtime: {
      tokenLoopMs: { value: round(m.tokenLoopMs, 4), unit: 'ms', source: 'measured', note: 'per generated token: ChatSession on a tiny 2-layer text LM minus a plain onnxruntime-node loop over the same file (best of runs each)' },
      prefillLoopMs: { value: round(m.prefillLoopMs, 4), unit: 'ms', source: 'measured', note: 'per prompt: ChatSession\'s prefill on the same tiny LM minus the plain loop\'s first call (best of runs each)' },
      imagePreprocessMs: { value: round(m.imagePreprocessMs, 3), unit: 'ms', source: 'measured', note: `fixed part per image: a ${PREPROCESS_FROM}×${PREPROCESS_FROM} PNG decoded, resized (bicubic) to ${PREPROCESS_TO.join(' and ')} squares and normalized (best of runs each), extrapolated to 0 output pixels` },
      imagePreprocessMsPerMpx: { value: round(m.imagePreprocessMsPerMpx, 3), unit: 'ms/Mpx', source: 'measured', note: 'per megapixel of the processed image (resize + normalize), from the same two sizes' },
    },
  };
  return checkTarget(profile, '<calibrated host>');
}

/**
 * Writes a profile to `file` atomically (temp file + rename), creating its folder. An existing file is
 * replaced only when it is itself a target profile; anything else is refused, never overwritten.
 * Returns the absolute path.
 */
export async function writeTargetFile(file: string, profile: TargetProfile): Promise<string> {
  const abs = resolve(file);
  const existing = await stat(abs).catch(() => undefined);
  if (existing) {
    const old = existing.isFile() ? await readJsonFile(abs, 'E_OUTPUT_EXISTS').catch(() => undefined) : undefined;
    if ((old as { format?: unknown } | undefined)?.format !== TARGET_FORMAT)
      throw fail('E_OUTPUT_EXISTS', `${file} exists and is not a target profile; refusing to overwrite it`, { file, hint: 'choose another -o path' });
  }
  try {
    await mkdir(dirname(abs), { recursive: true });
    await writeJsonAtomic(abs, profile);
  } catch (e) {
    throw fail('E_WRITE', `${file}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file }, e);
  }
  return abs;
}
