/** Small checks of request JSON fields shared by the API adapters; each problem is one E_SERVE_BAD_REQUEST naming the field. */
import { fail } from '../errors.js';

export const bad = (field: string, why: string) => fail('E_SERVE_BAD_REQUEST', `${field}: ${why}`);

export function object(v: unknown, field: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad(field, 'expected a JSON object');
  return v as Record<string, unknown>;
}

export function optNumber(v: unknown, field: string, min: number, max: number, integer = false): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    throw bad(field, `expected ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

export function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw bad(field, `expected a string, got ${JSON.stringify(v)?.slice(0, 40)}`);
  return v;
}

export function optBool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(field, `expected true or false, got ${JSON.stringify(v)?.slice(0, 40)}`);
  return v;
}

/** A string or an array of at most `max` strings (OpenAI's and Ollama's `stop`). */
export function stopList(v: unknown, field: string, max: number): string[] {
  if (v === undefined || v === null) return [];
  const xs = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(xs) || xs.length > max || !xs.every((x) => typeof x === 'string' && x.length > 0))
    throw bad(field, `expected a non-empty string or up to ${max} of them`);
  return xs as string[];
}
