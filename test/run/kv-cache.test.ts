/**
 * KV-cache decoding against recomputation: the split decoder run with an empty past on the whole
 * sequence every step (plain ORT, no runtime code) must pick the same tokens as the runtime's
 * one-token-per-step decoding; and a truncated cache must equal the cache of the shorter sequence.
 */
import ort from 'onnxruntime-node';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TensorLike } from '../../src/run/backend.js';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { generate } from '../../src/run/generation/chat-session.js';
import { KvCache } from '../../src/run/generation/kv-cache.js';
import { cleanupFixtures, IMAGE_TOKEN_ID, mergeFeaturesTs } from '../fixtures/index.js';
import { argmaxRow, brickSetDir, detFloat, f32, i64, ortSession, positions, prompt, releaseSessions } from './helpers.js';

const opened: BrickSet[] = [];
afterAll(async () => {
  for (const s of opened) await s.close();
  await releaseSessions();
  await cleanupFixtures();
});

async function llava(): Promise<{ set: BrickSet; dir: string }> {
  const dir = await brickSetDir('llava');
  const set = await openBrickSet(dir, { threads: 1 });
  opened.push(set);
  return { set, dir };
}

function emptyPast(layers: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let i = 0; i < layers; i++)
    for (const kv of ['key', 'value']) feeds[`past_key_values.${i}.${kv}`] = f32(new Float32Array(0), [1, 2, 0, 16]);
  return feeds;
}

/** embed → TS merge → decoder with an empty past over the whole sequence, every step. */
async function recomputeGreedy(dir: string, features: Float32Array, ids: number[], mask: number[], steps: number): Promise<number[]> {
  const embed = await ortSession(join(dir, 'embed_tokens.onnx'));
  const dec = await ortSession(join(dir, 'decoder_model_merged.onnx'));
  const seq = [...ids], m = [...mask], out: number[] = [];
  for (let k = 0; k < steps; k++) {
    const e = (await embed.run({ input_ids: i64(seq, [1, seq.length]) })).inputs_embeds as ort.Tensor;
    const merged = mergeFeaturesTs(seq, e.data as Float32Array, features, IMAGE_TOKEN_ID, 64);
    const r = await dec.run({ inputs_embeds: f32(merged, [1, seq.length, 64]), attention_mask: i64(m, [1, m.length]),
      position_ids: i64(positions(m), [1, m.length]), ...emptyPast(2) });
    const logits = (r.logits as ort.Tensor).data as Float32Array;
    const tok = argmaxRow(logits.subarray(logits.length - 320));
    out.push(tok); seq.push(tok); m.push(1);
  }
  return out;
}

describe('KV cache', () => {
  it('cached decoding = recomputing the whole sequence with the split decoder', async () => {
    const { set, dir } = await llava();
    expect(set.decoder.kv).toMatchObject({ layers: 2, kvHeads: 2, headDim: 16, dtype: 'float32' });
    const px = f32(detFloat(3 * 32 * 32, 0.9), [1, 3, 32, 32]);
    const feats = (await set.encode('vision', px)).features;
    for (const pad of [0, 2]) {
      const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16, pad);
      const ref = await recomputeGreedy(dir, feats, ids, mask, 10);
      const r = await generate(set, { inputIds: ids, attentionMask: mask, features: { [IMAGE_TOKEN_ID]: feats } },
        { maxNewTokens: 10, stopTokenIds: [] });
      expect(r.tokens).toEqual(ref);
    }
  });

  it('truncate keeps exactly the cache of the shorter sequence', async () => {
    const { set } = await llava();
    const layout = set.decoder.kv!;
    const ids = [315, 17, 99, 250, 3, 4, 128, 200, 42];
    const run = async (n: number) => {
      const e = (await set.run('embed', { input_ids: i64(ids.slice(0, n), [1, n]) })).inputs_embeds!;
      const cache = new KvCache(layout);
      const out = await set.run('decoder', { inputs_embeds: e, attention_mask: i64(Array(n).fill(1), [1, n]),
        position_ids: i64(positions(Array(n).fill(1)), [1, n]), ...cache.feeds() });
      cache.adopt(out, n);
      return cache;
    };
    const long = await run(9);
    const short = await run(5);
    long.truncate(5);
    expect(long.length).toBe(5);
    const a = long.feeds(), b = short.feeds();
    for (const name of Object.keys(b)) {
      expect(a[name]!.dims).toEqual([1, 2, 5, 16]);
      const x = a[name]!.data as Float32Array, y = b[name]!.data as Float32Array;
      let max = 0;
      for (let i = 0; i < y.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!));
      expect(max, name).toBeLessThan(1e-5);
    }
    long.truncate(0);
    expect(Object.values(long.feeds()).every((t: TensorLike) => t.dims[2] === 0 && t.data.length === 0)).toBe(true);
    expect(() => long.truncate(3)).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
  });

  it('present tensors are fed back as the next past without a JS copy', async () => {
    const { set } = await llava();
    const seen: TensorLike[] = [];
    const fed: TensorLike[] = [];
    const orig = set.run.bind(set);
    // Watch the decoder's feeds and outputs through the brick set's run().
    const spy: BrickSet = { ...set, run: async (name, feeds, o) => {
      if (name === 'decoder') fed.push(feeds['past_key_values.0.key']!);
      const out = await orig(name, feeds, o);
      if (name === 'decoder') seen.push(out['present.0.key']!);
      return out;
    } };
    await generate(spy, { inputIds: [315, 17, 99, 250] }, { maxNewTokens: 4, stopTokenIds: [] });
    expect(fed.length).toBe(4);
    for (let i = 1; i < fed.length; i++) expect(fed[i]).toBe(seen[i - 1]);
  });
});
