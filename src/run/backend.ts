/**
 * The backend contract of the runtime: a backend opens one brick (one ONNX file of a brick set) as a
 * `BrickSession`; the brick set and the generator above it only ever see this interface, so ORT CPU,
 * ORT WebGPU and RKNN (later) are interchangeable per brick.
 *
 * Tensors cross the contract as plain `{type, data, dims}` records (`ort.Tensor` is one), so callers can
 * build feeds over their own memory (an arena, a TABM slot) without importing a backend.
 */
import type { BrickEntry, TensorSpec } from '../formats/bricks.js';

export type BackendId = 'ort-cpu' | 'ort-webgpu' | 'rknn' | 'rkllm' | 'native';

/** Typed arrays a tensor may live in; float16 is raw Uint16 bits, as in ORT JS. */
export type TensorData =
  | Float32Array | Float64Array | Uint16Array | Int8Array | Uint8Array | Int16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array;

export interface TensorLike {
  /** ORT's element type names: 'float32', 'float16', 'int64', ... */
  readonly type: string;
  readonly data: TensorData;
  readonly dims: readonly number[];
}

export type Feeds = Readonly<Record<string, TensorLike>>;

export interface BackendOptions {
  /** Intra-op threads per session; absent = the backend's default. */
  readonly threads?: number;
  /** A vendor file converted from the brick (a bundle's `.rknn` artifact), relative to the brick's folder. */
  readonly artifact?: string;
  /** NPU cores from the plan's affinity ('0_1_2'). */
  readonly coreMask?: string;
  /** Rows of the KV cache a backend that keeps its own allocates (the bundle's context; the native engine, RKLLM). */
  readonly maxContext?: number;
  /** false: ONNX Runtime's intra-op threads block as soon as a call ends instead of spinning (default true). */
  readonly spinning?: boolean;
}

export interface RunOptions {
  /**
   * Output tensors over caller memory. The backend writes those outputs into `data` and returns the
   * same objects, so a result can land in an arena or a ring-buffer slot without a copy.
   */
  readonly outputs?: Readonly<Record<string, TensorLike>>;
  /** Outputs to compute; default all. Preallocated outputs are always computed. */
  readonly fetch?: readonly string[];
  /**
   * A backend that can stop a run in flight (RKLLM: rkllm_abort) does so when this fires, and then rejects
   * with E_ABORTED, its cache cut back to where the run started; others finish the run and ignore it.
   */
  readonly signal?: AbortSignal;
}

export interface BrickSession {
  readonly brick: string;
  /** The interface bricks.json declares; feeds are checked against it before the backend runs. */
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  run(feeds: Feeds, opts?: RunOptions): Promise<Record<string, TensorLike>>;
  /**
   * Whether a preallocated output over this memory is written in place (true) or computed elsewhere
   * and copied into it after the run (false); either way the caller's memory holds the result.
   */
  writesInPlace(data: TensorData): boolean;
  /**
   * Present when the backend keeps the decoder's KV cache itself (the native engine, RKLLM): the caller then feeds no
   * past_key_values, expects no present.*, and cuts the cache back with `truncate` when it reuses a prefix.
   */
  readonly ownsKv?: {
    truncate(rows: number): void;
    length(): number;
    /**
     * Of `length()`, the rows the backend's cache really holds; the rest it prefills again with the next step
     * (RKLLM cannot cut its cache back, only clear it). Absent: all of them.
     */
    resident?(): number;
  };
  close(): Promise<void>;
}

export type ProbeResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export interface Backend {
  readonly id: BackendId;
  /** Whether this backend can run here at all (library loads, device present); never throws. */
  probe(): Promise<ProbeResult>;
  open(brick: BrickEntry, dir: string, opts?: BackendOptions): Promise<BrickSession>;
}

export const elementCount = (dims: readonly number[]): number => dims.reduce((a, d) => a * d, 1);
