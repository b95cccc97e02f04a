/**
 * Messages between the main thread and an encoder worker (./encoder-worker.ts), and how errors cross
 * the thread boundary. Structured clone keeps plain objects only, so a NanomindError travels as its
 * code/message/file/hint/notes and is rebuilt on the other side with the same code; anything else is a
 * bug and travels as name/message/stack.
 */
import { NanomindError, type ErrorCode } from '../../errors.js';
import type { RingHandle } from '../buffers/ring-buffer.js';

export interface EncoderWorkerData {
  /** Brick set or bundle folder (the main thread has already checked its hashes). */
  readonly dir: string;
  readonly kind: 'vision';
  /** Intra-op threads of the worker's ORT sessions. */
  readonly threads: number;
  /** Linux: pin the worker thread to these CPUs before it opens its sessions (their thread pools inherit it). */
  readonly cpus?: readonly number[];
}

export type ToWorker =
  /** The ring's memory, sent once; later encodes name a region of it. */
  | { readonly type: 'attach'; readonly buffer: SharedArrayBuffer }
  /** Without a region, the rows come back in the reply (transferred). */
  | { readonly type: 'encode'; readonly id: number; readonly file: string; readonly byteOffset?: number; readonly byteLength?: number }
  /**
   * Encode these files in order into the ring: the worker claims each slot, writes its rows and commits
   * it through the ring's shared state words; the only reply is 'streamed' (or 'failed') at the end.
   */
  | { readonly type: 'stream'; readonly id: number; readonly ring: RingHandle; readonly files: readonly string[] }
  | { readonly type: 'close' };

export type FromWorker =
  /** `cpus`: where the worker's thread (and so its sessions' pools) may run; null off Linux. */
  | { readonly type: 'ready'; readonly ms: number; readonly cpus: readonly number[] | null }
  | { readonly type: 'startup-failed'; readonly error: WireError }
  | { readonly type: 'encoded'; readonly id: number; readonly rows: number; readonly dims: readonly number[]; readonly ms: number;
      readonly features?: Float32Array }
  | { readonly type: 'streamed'; readonly id: number; readonly count: number }
  | { readonly type: 'failed'; readonly id: number; readonly error: WireError };

export type WireError =
  | { readonly nanomind: true; readonly code: ErrorCode; readonly message: string; readonly file?: string; readonly hint?: string;
      readonly notes?: readonly string[] }
  | { readonly nanomind: false; readonly name: string; readonly message: string; readonly stack?: string };

export function toWire(e: unknown): WireError {
  if (e instanceof NanomindError)
    return { nanomind: true, code: e.code, message: e.message, file: e.detail.file, hint: e.detail.hint, notes: e.detail.notes ? [...e.detail.notes] : undefined };
  const err = e instanceof Error ? e : new Error(String(e));
  return { nanomind: false, name: err.name, message: err.message, stack: err.stack };
}

export function fromWire(w: WireError): Error {
  if (w.nanomind) return new NanomindError(w.code, w.message, { file: w.file, hint: w.hint, notes: w.notes });
  const err = new Error(`encoder worker: ${w.message}`);
  err.name = w.name;
  if (w.stack) err.stack = `${err.name}: ${err.message}\n    --- in the encoder worker ---\n${w.stack}`;
  return err;
}
