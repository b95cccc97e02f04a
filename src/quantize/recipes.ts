/**
 * Named per-brick precision choices. `hybrid` is the NANOMIND paper's configuration (vision on the NPU
 * in fp16, the language model on the CPU in 4-bit blocks of 32); the others are its ablations.
 * `--brick KIND=FORMAT` (or `NAME=FORMAT`) overrides one brick.
 */
import { fail } from '../errors.js';
import type { BrickEntry } from '../formats/bricks.js';
import { BRICK_KINDS, type BrickKind } from '../formats/names.js';
import { parseFormat } from './format-spec.js';

export type Recipe = Readonly<Record<BrickKind, string>>;

export const RECIPES: Readonly<Record<string, Recipe>> = {
  /** Vision fp16 on the NPU; decoder and embeddings 4-bit (block 32) on the CPU (a text encoder goes with the language model). */
  hybrid: { vision: 'fp16', projector: 'fp16', audio: 'fp16', embed: 'w4a16-g32', decoder: 'w4a16-g32', encoder: 'w4a16-g32' },
  /** Vision int8 (static QDQ) on the NPU; the language model as in hybrid. */
  'npu-int8': { vision: 'w8a8', projector: 'w8a8', audio: 'w8a8', embed: 'w4a16-g32', decoder: 'w4a16-g32', encoder: 'w4a16-g32' },
  /** Everything on the CPU: encoders 8-bit weights, the language model 4-bit. */
  'cpu-q4': { vision: 'w8a16-g32', projector: 'w8a16-g32', audio: 'w8a16-g32', embed: 'w4a16-g32', decoder: 'w4a16-g32', encoder: 'w4a16-g32' },
  /** Everything float16 (GPU-style). */
  'all-fp16': { vision: 'fp16', projector: 'fp16', audio: 'fp16', embed: 'fp16', decoder: 'fp16', encoder: 'fp16' },
  /** No change (the float reference, useful in sweeps). */
  fp32: { vision: 'fp32', projector: 'fp32', audio: 'fp32', embed: 'fp32', decoder: 'fp32', encoder: 'fp32' },
};

export type BrickOverrides = Readonly<Record<string, string>>;

/**
 * `kind=format` / `name=format` items → overrides. Formats are checked by planFormats after the brick
 * names, which only the brick set knows: `--brick nonsense=w4` names the unknown brick first.
 */
export function parseBrickOverrides(items: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw fail('E_USAGE', `--brick '${item}': expected KIND=FORMAT, e.g. decoder=w4a16-g128`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** The format of every brick: the override by brick name, then by kind, then the recipe. */
export function planFormats(bricks: readonly BrickEntry[], recipe: string, overrides: BrickOverrides = {}): Map<string, string> {
  const r = RECIPES[recipe];
  if (!r) throw fail('E_QUANT_RECIPE', `unknown recipe '${recipe}'`, { hint: `recipes: ${Object.keys(RECIPES).join(', ')}` });
  for (const key of Object.keys(overrides))
    if (!bricks.some((b) => b.name === key) && !BRICK_KINDS.includes(key as BrickKind))
      throw fail('E_USAGE', `--brick ${key}=…: no brick or brick kind '${key}' (bricks: ${bricks.map((b) => b.name).join(', ')})`);
  for (const format of Object.values(overrides)) parseFormat(format); // E_QUANT_FORMAT, after the names
  return new Map(bricks.map((b) => [b.name, parseFormat(overrides[b.name] ?? overrides[b.kind] ?? r[b.kind]).name]));
}

/** `--sweep decoder=fp32,w4a16-g32;vision=fp16,w8a8` → a grid for the sweep (formats checked). */
export function parseSweepGrid(text: string): Record<string, string[]> {
  const grid: Record<string, string[]> = {};
  for (const part of text.split(';').map((x) => x.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const formats = part.slice(eq + 1).split(',').map((f) => f.trim()).filter(Boolean);
    if (eq <= 0 || !formats.length) throw fail('E_USAGE', `--sweep '${part}': expected kind=format,format (e.g. decoder=fp32,w4a16-g32)`);
    grid[part.slice(0, eq)] = formats.map((f) => parseFormat(f).name);
  }
  return grid;
}
