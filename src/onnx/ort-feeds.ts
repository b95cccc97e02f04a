/**
 * Plain `{type, data, dims}` records (the runtime's TensorLike) as `ort.Tensor` feeds for the compiler
 * stages that run ONNX Runtime directly; an `ort.Tensor` passes through (wrapping never copies data).
 */
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import type { TensorLike } from '../run/backend.js';

export const toOrtFeeds = (f: Readonly<Record<string, TensorLike | ort.Tensor>>): Record<string, ort.Tensor> =>
  Object.fromEntries(Object.entries(f).map(([k, t]) =>
    [k, t instanceof ort.Tensor ? t : new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims)]));
