/**
 * Shared helpers for the runtime tests: fixture brick sets (partitioned once per process), prompts
 * with placeholder tokens, and plain-ORT reference loops that share no code with src/run.
 */
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { partition } from '../../src/partition/index.js';
import { fixtureDir, fixtureRoot, SPECIAL_TOKENS, type FixtureName } from '../fixtures/index.js';

const sets = new Map<string, Promise<string>>();

/** The fixture partitioned into a brick set (once per process, under the fixture root). */
export function brickSetDir(name: FixtureName): Promise<string> {
  let p = sets.get(name);
  if (!p) {
    p = (async () => {
      const fx = await fixtureDir(name);
      const input = 'file' in fx ? fx.file : fx.dir;
      const out = join(await fixtureRoot(), `${name}-bricks`);
      await partition({ input, out });
      return out;
    })();
    sets.set(name, p);
  }
  return p;
}

/** A fresh copy of a fixture's brick set, for tests that damage it. */
export async function freshBrickSet(name: FixtureName): Promise<string> {
  const fx = await fixtureDir(name);
  const out = join(await mkdtemp(join(await fixtureRoot(), 'set-')), 'bricks');
  await partition({ input: 'file' in fx ? fx.file : fx.dir, out });
  return out;
}

/** x[i] = sin(0.1 i + phase): deterministic pixel / mel values. */
export const detFloat = (n: number, phase = 0): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(0.1 * i + phase));

/** ChatML-ish prompt: `pad` pad tokens (mask 0), a prefix, `count` placeholder tokens, text, `<|im_end|>`. */
export function prompt(placeholder: number, count: number, pad = 0, textLen = 5): { ids: number[]; mask: number[] } {
  const text = (n: number, off: number) => Array.from({ length: n }, (_, p) => (7 * (p + off) + 3) % 300);
  const ids = [...Array<number>(pad).fill(SPECIAL_TOKENS['<|endoftext|>']), SPECIAL_TOKENS['<|im_start|>'], ...text(3, 0),
    ...Array<number>(count).fill(placeholder), ...text(textLen, 9), SPECIAL_TOKENS['<|im_end|>']];
  return { ids, mask: ids.map((_, p) => (p < pad ? 0 : 1)) };
}

export const f32 = (data: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', data, dims);
export const i64 = (data: readonly number[] | BigInt64Array, dims: readonly number[]) =>
  new ort.Tensor('int64', data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => BigInt(v)), dims);

/** Lowest index of the largest value (numpy argmax). */
export function argmaxRow(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

const sessions = new Map<string, Promise<ort.InferenceSession>>();
export const ortSession = (file: string): Promise<ort.InferenceSession> => {
  let s = sessions.get(file);
  if (!s) { s = ort.InferenceSession.create(file); sessions.set(file, s); }
  return s;
};
export async function releaseSessions(): Promise<void> {
  for (const s of sessions.values()) await (await s).release();
  sessions.clear();
}

/**
 * The reference: the monolithic graph (encoder + merge + decoder, no KV cache) re-run on the whole
 * sequence every step, argmax of the last logits row.
 */
export async function monolithicGreedy(file: string, media: Record<string, ort.Tensor>, ids: readonly number[],
  mask: readonly number[], steps: number): Promise<number[]> {
  const s = await ortSession(file);
  const seq = [...ids], m = [...mask], out: number[] = [];
  for (let k = 0; k < steps; k++) {
    const r = await s.run({ ...media, input_ids: i64(seq, [1, seq.length]), attention_mask: i64(m, [1, m.length]) });
    const logits = r.logits as ort.Tensor;
    const V = logits.dims.at(-1)!;
    const tok = argmaxRow((logits.data as Float32Array).subarray(logits.data.length - V));
    out.push(tok); seq.push(tok); m.push(1);
  }
  return out;
}

export function positions(mask: readonly number[]): number[] {
  let s = 0;
  return mask.map((v) => (s += v, v === 0 ? 1 : s - 1));
}
