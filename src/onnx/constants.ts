/** Reading small constant values (scalars, shape vectors) from initializers and Constant nodes. */
import type { TensorProto } from 'onnx-buf';
import { DT, typedView } from './dtype.js';
import type { Graph } from './graph.js';
import { externalRef, inlineBytes } from './model-io.js';

/** The numeric values of an inline tensor, or undefined for external/large/non-numeric ones. */
export function smallTensorValues(t: TensorProto, limit = 4096): number[] | undefined {
  if (externalRef(t) || t.dataType === DT.STRING) return undefined;
  const count = t.dims.reduce((n, d) => n * Number(d), 1);
  if (count > limit) return undefined;
  const view = typedView(t.dataType, inlineBytes(t));
  if (t.dataType === DT.FLOAT16 || t.dataType === DT.BFLOAT16) return undefined;
  return Array.from(view as ArrayLike<number | bigint>, Number);
}

/** The values of a constant graph value (initializer or Constant node output), if it is one. */
export function constantValues(g: Graph, value: string): number[] | undefined {
  const init = g.initializers.get(value);
  if (init) return smallTensorValues(init);
  const n = g.producer.get(value);
  if (n?.opType !== 'Constant') return undefined;
  for (const a of n.attribute) {
    if (a.name === 'value' && a.t) return smallTensorValues(a.t);
    if (a.name === 'value_int') return [Number(a.i)];
    if (a.name === 'value_ints') return a.ints.map(Number);
    if (a.name === 'value_float') return [a.f];
    if (a.name === 'value_floats') return [...a.floats];
  }
  return undefined;
}
