/**
 * Loads the native kernels (kernels/, built by node-gyp at install) once. A missing or broken build is
 * not an error here: `loadKernels` reports why, and the caller keeps the decoder on ONNX Runtime.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface KernelModelConfig {
  readonly hidden: number; readonly layers: number; readonly heads: number; readonly kvHeads: number;
  readonly headDim: number; readonly intermediate: number; readonly vocab: number; readonly maxContext: number;
  readonly threads: number; readonly bits: 4 | 8; readonly qkNorm: 0 | 1; readonly attnBias: 0 | 1; readonly rmsEps: number;
}

/** An opaque engine model (an N-API external); freed by the garbage collector. */
export type KernelModel = { readonly __kernelModel: unique symbol };

export interface Kernels {
  /** Which dot-product path runs: 'avx2', 'avx512vnni', 'neon-dotprod', 'neon' or 'portable'. */
  simd(): string;
  /** weights: the packed bytes, or a file the engine reads into its own memory (no copy on the JS heap). */
  create(cfg: KernelModelConfig, weights: Uint8Array | { readonly path: string; readonly bytes: number }, offsets: Float64Array, invFreq: Float32Array): KernelModel;
  /** Runs s tokens at positions pos0 …; writes the last token's logits (or all with allLogits). */
  forward(m: KernelModel, embeds: Float32Array, s: number, pos0: number, logits: Float32Array, allLogits: boolean): void;
  /** Test hook: y [s × n] = W (packed, n rows of k) · x [s × k], activations quantized as the model does. */
  matmul(bits: 4 | 8, w: Uint8Array, n: number, k: number, x: Float32Array, s: number, threads: number): Float32Array;
  /** Benchmark roofline: GB/s of the best of `reps` passes summing a buffer of `megabytes` on `threads` threads. */
  bandwidth(megabytes: number, threads: number, reps: number): number;
}

export type KernelsLoad = { readonly ok: true; readonly kernels: Kernels } | { readonly ok: false; readonly reason: string };

// src/run/backends/native → repo root (the same depth under dist/). The package's own build (npm ci / install), else
// the build `nanomind deploy` ships for the board's architecture (src/deploy/kernels-prebuild.ts, which owns the path).
const ADDON = fileURLToPath(new URL('../../../../kernels/build/Release/nanomind_kernels.node', import.meta.url));
const PREBUILT = fileURLToPath(new URL(`../../../../prebuilds/linux-${process.arch}/nanomind_kernels.node`, import.meta.url));
const BUILD_SCRIPT = fileURLToPath(new URL('../../../../kernels/build.mjs', import.meta.url));

let loaded: KernelsLoad | undefined;
export function loadKernels(): KernelsLoad {
  if (loaded) return loaded;
  if (process.env.NANOMIND_NO_KERNELS) return (loaded = { ok: false, reason: 'NANOMIND_NO_KERNELS is set' });
  try {
    loaded = { ok: true, kernels: createRequire(import.meta.url)(existsSync(ADDON) || !existsSync(PREBUILT) ? ADDON : PREBUILT) as Kernels };
  } catch (e) {
    // A runtime installed by `nanomind deploy` has no sources to build, only the prebuilt addon deploy could make.
    loaded = { ok: false, reason: existsSync(BUILD_SCRIPT)
      ? `native kernels do not load (${(e as Error).message.split('\n')[0]}); run \`npm rebuild\` or \`node kernels/build.mjs\``
      : existsSync(PREBUILT) ? `the prebuilt native kernels do not load (${(e as Error).message.split('\n')[0]})`
        : 'this install carries no native kernels (deploy ships them prebuilt only where it could build them for the board)' };
  }
  return loaded;
}
