/**
 * Main-thread side of the encoder worker (./encoder-worker.ts): starts it (its ORT sessions are opened
 * once, before the first image), sends it images and ring-slot regions, and turns its replies back into
 * results or into the same NanomindError the worker threw.
 *
 * onnxruntime-node runs `session.run` on the JS thread that calls it, so two ORT sessions only run at
 * the same time from two threads: this worker is what lets the vision encoder work while the decoder
 * runs on the main thread.
 *
 * A worker is always ended through `terminate()`: it asks the worker to close its sessions and, if it
 * has not exited within a few seconds, stops it. `liveEncoderWorkers()` counts workers not yet exited.
 */
import '../../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { fail } from '../../errors.js';
import type { RingHandle } from '../buffers/ring-buffer.js';
import { fromWire, type EncoderWorkerData, type FromWorker, type ToWorker } from './protocol.js';
import { compiledWorker } from '../../util/worker-file.js';

export interface EncoderWorkerOptions {
  /** Brick set or bundle folder with a vision encoder and preprocessor_config.json. */
  readonly dir: string;
  /** Intra-op threads of the worker's encoder sessions (default `defaultEncoderThreads()`). */
  readonly threads?: number;
  /** Linux: the CPUs the worker and its sessions' thread pools run on (plan.json's cluster); default: not pinned. */
  readonly cpus?: readonly number[];
}

export interface EncodedImage {
  readonly rows: number;
  readonly dims: readonly number[];
  /** Wall ms of the encoder chain in the worker (preprocessing excluded, as in `BrickSet.encode`). */
  readonly ms: number;
  /** The rows themselves when no slot was given. */
  readonly features?: Float32Array;
}

export interface SlotRegion { readonly byteOffset: number; readonly byteLength: number }

export interface EncoderWorker {
  readonly threads: number;
  /** Worker start: module loading + opening the encoder sessions. */
  readonly startupMs: number;
  /** The CPUs the worker's thread may run on (as the kernel reports after pinning); null off Linux. */
  readonly cpus: readonly number[] | null;
  /** Shares the ring's memory with the worker (once, before `encode` with a slot). */
  attach(buffer: SharedArrayBuffer): void;
  /** Preprocesses and encodes one image file; with `slot`, the rows are written into that region of the attached buffer. */
  encode(file: string, slot?: SlotRegion): Promise<EncodedImage>;
  /**
   * Encodes `files` in order into a shared ring: the worker claims, fills and commits the slots itself
   * (slot meta `numbers`: encoder ms, copy ms, bytes copied). Resolves once the last slot is committed;
   * on failure the worker closes the ring and this rejects with its error.
   */
  stream(ring: RingHandle, files: readonly string[]): Promise<{ count: number }>;
  /** Closes the worker's sessions and ends the thread; safe to call more than once. */
  terminate(): Promise<void>;
}

const live = new Set<Worker>();

/** Encoder workers started and not yet exited (0 after every `terminate()`). */
export const liveEncoderWorkers = (): number => live.size;

/** Half the machine's cores, at least 1: the other half is left to the decoder on the main thread. */
export const defaultEncoderThreads = (): number => Math.max(1, Math.floor(availableParallelism() / 2));

/** The decoder's intra-op threads beside a default encoder worker: the cores the worker leaves. */
export const decoderThreadsBesideWorker = (): number => Math.max(1, availableParallelism() - defaultEncoderThreads());

const CLOSE_GRACE_MS = 5000;

const workerFile = (): URL => compiledWorker(import.meta.url, './encoder-worker.js', '../../../dist/run/workers/encoder-worker.js', 'encoder worker');

export async function startEncoderWorker(o: EncoderWorkerOptions): Promise<EncoderWorker> {
  const threads = o.threads ?? defaultEncoderThreads();
  if (!(Number.isSafeInteger(threads) && threads >= 1)) throw fail('E_BAD_OPTION', `encoderThreads must be an integer ≥ 1, got ${threads}`);
  const workerData: EncoderWorkerData = { dir: o.dir, kind: 'vision', threads, cpus: o.cpus ? [...o.cpus] : undefined };
  const t0 = performance.now();
  const w = new Worker(workerFile(), { workerData });
  live.add(w);

  // Each request's entry casts the reply back to its own kind ('encoded' → EncodedImage, 'streamed' → count).
  const pending = new Map<number, { resolve(r: EncodedImage | { count: number }): void; reject(e: unknown): void }>();
  let nextId = 0;
  let gone: Error | undefined;
  let onReady: { resolve(r: { ms: number; cpus: readonly number[] | null }): void; reject(e: unknown): void } | undefined;
  const ready = new Promise<{ ms: number; cpus: readonly number[] | null }>((resolve, reject) => { onReady = { resolve, reject }; });
  const send = (msg: ToWorker) => w.postMessage(msg);

  w.on('message', (msg: FromWorker) => {
    switch (msg.type) {
      case 'ready': onReady?.resolve({ ms: performance.now() - t0, cpus: msg.cpus }); break;
      case 'startup-failed': gone ??= fromWire(msg.error); onReady?.reject(gone); break;
      case 'encoded': {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        p?.resolve({ rows: msg.rows, dims: msg.dims, ms: msg.ms, features: msg.features });
        break;
      }
      case 'streamed': {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        p?.resolve({ count: msg.count });
        break;
      }
      case 'failed': {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        p?.reject(fromWire(msg.error));
        break;
      }
    }
  });
  // An uncaught error in the worker is a bug; 'exit' follows it and fails whatever was waiting.
  w.on('error', (e) => { gone ??= fail('E_WORKER', `the encoder worker crashed: ${e.message}`, undefined, e); });
  const exited = new Promise<void>((resolve) => w.once('exit', (code) => {
    live.delete(w);
    gone ??= fail('E_WORKER', `the encoder worker exited (code ${code})`);
    onReady?.reject(gone);
    for (const p of pending.values()) p.reject(gone);
    pending.clear();
    resolve();
  }));

  let closing: Promise<void> | undefined;
  const terminate = (): Promise<void> => (closing ??= (async () => {
    if (!live.has(w)) return;
    send({ type: 'close' });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), CLOSE_GRACE_MS); });
    if ((await Promise.race([exited, late])) === 'late') await w.terminate();
    clearTimeout(timer);
    await exited;
  })());

  let startupMs: number, cpus: readonly number[] | null;
  try {
    ({ ms: startupMs, cpus } = await ready);
  } catch (e) {
    await terminate();
    throw e;
  }
  return {
    threads, startupMs, cpus,
    attach: (buffer) => send({ type: 'attach', buffer }),
    encode(file, slot) {
      if (gone || closing) return Promise.reject(gone ?? fail('E_WORKER', 'the encoder worker was terminated'));
      const id = nextId++;
      return new Promise<EncodedImage>((resolve, reject) => {
        pending.set(id, { resolve: (r) => resolve(r as EncodedImage), reject });
        send({ type: 'encode', id, file, byteOffset: slot?.byteOffset, byteLength: slot?.byteLength });
      });
    },
    stream(ring, files) {
      if (gone || closing) return Promise.reject(gone ?? fail('E_WORKER', 'the encoder worker was terminated'));
      const id = nextId++;
      return new Promise<{ count: number }>((resolve, reject) => {
        pending.set(id, { resolve: (r) => resolve(r as { count: number }), reject });
        send({ type: 'stream', id, ring, files });
      });
    },
    terminate,
  };
}
