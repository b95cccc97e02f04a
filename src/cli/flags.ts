/** Parsing helpers for repeated and structured flags, turning bad values into usage errors. */
import { fail } from '../errors.js';
import { BRICK_KINDS, type BrickKind } from '../formats/names.js';
import type { SamplingOptions } from '../run/generation/sampling.js';

/** `--engine` of the commands that open a model: which engine runs a decoder that has a native pack. */
export const ENGINE_OPTION = ['--engine <auto|native|ort>',
  'decoder engine when it has a native pack: auto (the native kernels when they load, else ONNX Runtime), native (required; an error otherwise), ort (ignore the pack)', 'auto'] as const;

export function parseEngine(v: string | undefined): 'auto' | 'native' | 'ort' {
  const e = v ?? 'auto';
  if (e !== 'auto' && e !== 'native' && e !== 'ort') throw fail('E_USAGE', `--engine '${e}': expected auto, native or ort`);
  return e;
}

export const collect = (value: string, previous: string[]): string[] => [...previous, ...value.split(',').filter(Boolean)];

/** `--cut vision=tensor` (repeatable, or comma separated) → overrides per brick kind. */
export function parseCuts(items: readonly string[]): Partial<Record<BrickKind, string>> {
  const cuts: Partial<Record<BrickKind, string>> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    const kind = item.slice(0, eq) as BrickKind;
    if (eq <= 0 || !BRICK_KINDS.includes(kind) || eq === item.length - 1)
      throw fail('E_USAGE', `--cut '${item}': expected brick=tensor with brick one of ${BRICK_KINDS.join(', ')}`);
    cuts[kind] = item.slice(eq + 1);
  }
  return cuts;
}

/**
 * A numeric flag, checked: a number (an integer with `integer`), ≥ `min` (> `min` with `minExclusive`),
 * ≤ `max`. Out of range is a usage error (exit 2), as the library's own range checks would be exit 1.
 */
export function parseNumber(name: string, value: string | undefined, opts: { min?: number; max?: number; minExclusive?: boolean; integer?: boolean } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const low = opts.min === undefined || (opts.minExclusive ? n > opts.min : n >= opts.min);
  const high = opts.max === undefined || n <= opts.max;
  if (value.trim() === '' || !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || !low || !high) {
    const range = opts.min !== undefined && opts.max !== undefined ? ` in ${opts.minExclusive ? '(' : '['}${opts.min}, ${opts.max}]`
      : opts.min !== undefined ? ` ${opts.minExclusive ? '>' : '≥'} ${opts.min}` : opts.max !== undefined ? ` ≤ ${opts.max}` : '';
    throw fail('E_USAGE', `${name} '${value}': expected ${opts.integer ? 'an integer' : 'a number'}${range}`);
  }
  return n;
}

export interface SamplingFlags { temperature?: string; topK?: string; topP?: string; repetitionPenalty?: string; seed?: string }

/**
 * `--temperature/--top-k/--top-p/--repetition-penalty/--seed` → sampling options; undefined when none is
 * given (the model's default). Asking for top-k/top-p/seed without a temperature samples at 1, as llama.cpp.
 */
export function samplingFlags(f: SamplingFlags): SamplingOptions | undefined {
  const s = {
    temperature: parseNumber('--temperature', f.temperature, { min: 0 }),
    topK: parseNumber('--top-k', f.topK, { min: 0, integer: true }),
    topP: parseNumber('--top-p', f.topP, { min: 0, max: 1, minExclusive: true }),
    repetitionPenalty: parseNumber('--repetition-penalty', f.repetitionPenalty, { min: 0, minExclusive: true }),
    seed: parseNumber('--seed', f.seed, { min: 0, max: 2 ** 32 - 1, integer: true }),
  };
  const given = Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined));
  return Object.keys(given).length ? { temperature: 1, ...given } : undefined;
}
