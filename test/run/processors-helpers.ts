/**
 * Shared by test/run/processors-*.test.ts: deterministic test images, a model folder built from a real
 * family's config (test/fixtures/processors/<family>/) with sizes overridden small, and the
 * transformers.js oracle (its AutoImageProcessor reading that same folder).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { AutoImageProcessor, RawImage, env } from '@huggingface/transformers';
import { expect } from 'vitest';
import type { TensorLike } from '../../src/run/inputs/families/index.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'processors');

/** Smooth-plus-texture RGB pattern (deterministic). */
export function pattern(w: number, h: number, seed = 1): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = Math.round(127.5 + 127.5 * Math.sin((x / w) * 6.283 * 1.3 + seed));
      px[i + 1] = Math.round((255 * y) / Math.max(1, h - 1));
      px[i + 2] = (x * x * 7 + y * 13 + x * y * 3 + seed) % 256;
    }
  return px;
}

/** PNG bytes of a w × h pattern; channels 4 adds a varying alpha, 1 makes it grey. */
export async function png(w: number, h: number, channels: 1 | 3 | 4 = 3, seed = 1): Promise<Uint8Array> {
  const rgb = pattern(w, h, seed);
  const data = channels === 3 ? rgb
    : channels === 1 ? rgb.filter((_, i) => i % 3 === 1)
      : new Uint8Array(w * h * 4).map((_, i) => (i % 4 === 3 ? (i * 7) % 256 : rgb[Math.floor(i / 4) * 3 + (i % 4)]));
  return sharp(data, { raw: { width: w, height: h, channels } }).png().toBuffer();
}

/** A model folder: the family's fixture files, preprocessor_config.json keys overridden. */
export async function modelDir(family: string, override: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), `nanomind-proc-${family}-`));
  const dir = join(root, family);
  await mkdir(dir);
  const pre = JSON.parse(await readFile(join(FIXTURES, family, 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({ ...pre, ...override }));
  try {
    await writeFile(join(dir, 'processor_config.json'), await readFile(join(FIXTURES, family, 'processor_config.json')));
  } catch { /* the family has none */ }
  for (const [name, json] of Object.entries(extra)) await writeFile(join(dir, name), JSON.stringify(json));
  return dir;
}

export const removeModelDir = (dir: string) => rm(join(dir, '..'), { recursive: true, force: true });

/** transformers.js' image processor for a folder made by modelDir (local files only). */
export async function tjsImageProcessor(dir: string) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = join(dir, '..') + '/';
  return AutoImageProcessor.from_pretrained(dir.split('/').at(-1)!);
}

export const rawImage = (bytes: Uint8Array) => RawImage.fromBlob(new Blob([bytes as Uint8Array<ArrayBuffer>]));

export interface TjsTensor { data: ArrayLike<number | bigint | boolean>; dims: number[]; type?: string }

/** Max |a − b| over two tensors of equal shape (asserted). */
export function maxAbsDiff(ours: TensorLike, theirs: TjsTensor): number {
  expect([...ours.dims]).toEqual(theirs.dims);
  let m = 0;
  const a = ours.data, b = theirs.data;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return m;
}

/** Integer tensor contents as plain numbers (int64 / bool). */
export const ints = (t: TensorLike | TjsTensor) => Array.from(t.data as ArrayLike<number | bigint | boolean>, Number);
