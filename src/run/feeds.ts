/**
 * Checking feeds against a brick's declared interface before any backend sees them: a wrong shape fed
 * to ORT surfaces as a C++ message from deep inside a kernel (or, for some ops, as silently wrong
 * numbers), so the runtime reports it first, naming the brick, the input and the dimension.
 *
 * Symbolic dims (`batch_size`, `sequence_length`) must take one value across all inputs of one call,
 * which is also how output dims are resolved for preallocation.
 */
import { fail } from '../errors.js';
import type { DimSpec, TensorSpec } from '../formats/bricks.js';
import { halfToFloat } from '../onnx/dtype.js';
import { elementCount, type Feeds, type TensorData, type TensorLike } from './backend.js';

export type DimBindings = Map<string, number>;

/** Checks every feed, reporting all problems at once; returns the values bound to symbolic dims. */
export function checkFeeds(brick: string, specs: readonly TensorSpec[], feeds: Feeds): DimBindings {
  const issues: string[] = [];
  const bound: DimBindings = new Map();
  const names = new Set(specs.map((s) => s.name));
  for (const name of Object.keys(feeds))
    if (!names.has(name)) issues.push(`${name}: brick '${brick}' has no such input (inputs: ${[...names].join(', ')})`);
  let code: 'E_INPUT_MISSING' | 'E_INPUT_DTYPE' | 'E_INPUT_SHAPE' | undefined;
  const note = (c: typeof code, msg: string) => { code ??= c; issues.push(msg); };
  for (const s of specs) {
    const t = feeds[s.name];
    if (!t) { note('E_INPUT_MISSING', `${s.name}: missing`); continue; }
    if (s.dtype !== 'unknown' && t.type !== s.dtype) note('E_INPUT_DTYPE', `${s.name}: expected ${s.dtype}, got ${t.type}`);
    if (!t.dims.every((d) => Number.isSafeInteger(d) && d >= 0))
      { note('E_INPUT_SHAPE', `${s.name}: dims [${t.dims.join(', ')}] are not non-negative integers`); continue; }
    if (t.data.length !== elementCount(t.dims))
      note('E_INPUT_SHAPE', `${s.name}: dims [${t.dims.join(', ')}] need ${elementCount(t.dims)} values, data has ${t.data.length}`);
    if (!s.shape) continue;
    if (s.shape.length !== t.dims.length) {
      note('E_INPUT_SHAPE', `${s.name}: expected rank ${s.shape.length} [${fmt(s.shape)}], got [${t.dims.join(', ')}]`);
      continue;
    }
    s.shape.forEach((want, i) => {
      const got = t.dims[i]!;
      if (typeof want === 'number' && want !== got)
        note('E_INPUT_SHAPE', `${s.name}: dim ${i} must be ${want}, got ${got} (expected [${fmt(s.shape!)}], got [${t.dims.join(', ')}])`);
      else if (typeof want === 'string') {
        const prev = bound.get(want);
        if (prev === undefined) bound.set(want, got);
        else if (prev !== got) note('E_INPUT_SHAPE', `${s.name}: dim ${i} '${want}' is ${got} here but ${prev} in another input`);
      }
    });
  }
  if (issues.length)
    throw fail(code ?? 'E_INPUT_UNKNOWN', `brick '${brick}': ${issues.length} bad input(s): ${issues[0]}`,
      { notes: issues, hint: 'feed tensors shaped as bricks.json declares the brick inputs' });
  return bound;
}

/** Concrete dims of an output from the bindings of a checked call; undefined when some dim is unknown. */
export function resolveDims(shape: readonly DimSpec[] | null, bound: DimBindings): number[] | undefined {
  if (!shape) return undefined;
  const dims: number[] = [];
  for (const d of shape) {
    const v = typeof d === 'number' ? d : d === null ? undefined : bound.get(d);
    if (v === undefined) return undefined;
    dims.push(v);
  }
  return dims;
}

const fmt = (shape: readonly DimSpec[]): string => shape.map((d) => (d === null ? '?' : String(d))).join(', ');

/** A tensor record over existing memory (no copy). */
export const tensor = (type: string, data: TensorData, dims: readonly number[]): TensorLike => ({ type, data, dims });

export const int64 = (values: readonly number[], dims: readonly number[] = [1, values.length]): TensorLike =>
  tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);

/** A float tensor's values as float32: the same array for float32, a converted copy for float16. */
export function toFloat32(t: TensorLike, name: string): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, halfToFloat);
  throw fail('E_UNSUPPORTED', `'${name}' is ${t.type}; the runtime reads float32 or float16 here`);
}

/** One tensor, as opposed to feeds by input name. */
export const isTensorLike = (x: TensorLike | Feeds): x is TensorLike =>
  typeof (x as TensorLike).type === 'string' && Array.isArray((x as TensorLike).dims) && ArrayBuffer.isView((x as TensorLike).data);
