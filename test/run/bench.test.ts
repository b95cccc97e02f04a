/**
 * `nanomind bench`: the result's shape and that every number is positive and finite (no timing
 * assertions), through the library and the CLI; and the runtime fix bench ran into — a placeholder id
 * the model generates is embedded as text — against a plain-ORT recompute of the whole sequence.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { partition } from '../../src/partition/index.js';
import { bench, median, spread, type Spread } from '../../src/run/bench.js';
import { openBrickSet } from '../../src/run/brick-set.js';
import { generate } from '../../src/run/generation/chat-session.js';
import { IMAGE_TOKEN_ID, buildTinyTextLm, cleanupFixtures, fixtureRoot, mergeFeaturesTs } from '../fixtures/index.js';
import { argmaxRow, brickSetDir, detFloat, f32, i64, ortSession, positions, releaseSessions } from './helpers.js';

const exec = promisify(execFile);
afterAll(async () => { await releaseSessions(); await cleanupFixtures(); });

const positiveSpread = (s: Spread) => {
  for (const v of [s.median, s.min, s.max]) { expect(Number.isFinite(v)).toBe(true); expect(v).toBeGreaterThan(0); }
  expect(s.min).toBeLessThanOrEqual(s.median);
  expect(s.median).toBeLessThanOrEqual(s.max);
};

describe('bench', () => {
  it('median and spread', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(spread([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5 });
  });

  it('measures a vision brick set: encoder, TTFT, prefill, decode, bricks, prefix reuse, image stream', async () => {
    const r = await bench({ dir: await brickSetDir('llava'), runs: 2, promptTokens: 20, newTokens: 6, streamImages: 2, threads: 1 });
    expect(r.machine.cores).toBeGreaterThan(0);
    expect(r.machine.node).toBe(process.version);
    expect(r.model.media).toBe('image (synthetic)');
    expect(r.settings).toEqual({ runs: 2, promptTokens: 20, newTokens: 6, threads: 1 });
    expect(r.promptTokens).toBe(20 + 16); // the fixture's vision encoder yields 16 rows
    expect(r.runs).toHaveLength(2);
    for (const run of r.runs) expect([run.promptTokens, run.newTokens]).toEqual([36, 6]);
    for (const s of [r.encodeMs!, r.ttftMs, r.prefillTokPerS, r.decodeTokPerS, r.totalMs, ...Object.values(r.bricks)]) positiveSpread(s);
    expect(Object.keys(r.bricks).sort()).toEqual(['decoder', 'embed', 'vision']);
    expect(r.peakRssMb).toBeGreaterThan(0);
    const p = r.prefixReuse;
    // The second turn continues the first prompt, so at least all of it comes from the cache.
    expect(p.reusedTokens).toBeGreaterThanOrEqual(36);
    expect(p.reusedTokens).toBeLessThan(p.promptTokens);
    positiveSpread(p.reusedTtftMs);
    positiveSpread(p.freshTtftMs);
    expect(Number.isFinite(p.savedMs)).toBe(true);
    expect(r.imageStream!.images).toBe(2);
    for (const v of [r.imageStream!.overlapImagesPerS, r.imageStream!.sequentialImagesPerS, r.imageStream!.speedup]) expect(v).toBeGreaterThan(0);
  });

  it('bench --json through the CLI on a text-only model, and bad options', async () => {
    const root = await fixtureRoot();
    await buildTinyTextLm(join(root, 'bench-text'));
    const dir = join(root, 'bench-text-bricks');
    await partition({ input: join(root, 'bench-text'), out: dir });
    const cmd = process.execPath;
    const args = [join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js')];
    const { stdout } = await exec(cmd, [...args, 'bench', dir, '--runs', '2', '--prompt-tokens', '12', '--new-tokens', '4', '--json'], { env: { ...process.env, CI: 'true' } });
    const r = JSON.parse(stdout);
    expect(Object.keys(r).sort()).toEqual(['bricks', 'decodeTokPerS', 'encodeMs', 'imageStream', 'machine', 'model', 'peakRssMb', 'power', 'prefillTokPerS',
      'prefixReuse', 'promptTokens', 'runs', 'settings', 'totalMs', 'ttftMs'].sort());
    expect([r.encodeMs, r.imageStream, r.model.media, r.promptTokens, r.power]).toEqual([null, null, null, 12, null]);
    for (const s of [r.ttftMs, r.prefillTokPerS, r.decodeTokPerS, r.totalMs, r.bricks.decoder]) positiveSpread(s);
    expect(r.prefixReuse.reusedTokens).toBeGreaterThanOrEqual(12);
    const bad = await exec(cmd, [...args, 'bench', dir, '--prompt-tokens', '600', '--json']).catch((e) => e);
    expect([bad.code, JSON.parse(bad.stdout).error.code]).toEqual([1, 'E_BAD_OPTION']);
    const usage = await exec(cmd, [...args, 'bench', dir, '--runs', '0']).catch((e) => e);
    expect([usage.code, usage.stderr]).toEqual([2, expect.stringMatching(/^error\[E_USAGE\]/)]);
  });
});

describe('a placeholder id the model generates', () => {
  it('is embedded as text, not merged: cached decoding = plain ORT recompute with features on prompt rows only', async () => {
    const dir = await brickSetDir('llava');
    const set = await openBrickSet(dir, { threads: 1 });
    try {
      const feats = (await set.encode('vision', f32(detFloat(3 * 32 * 32, 0.9), [1, 3, 32, 32]))).features;
      const ids = [315, 3, 10, 17, ...Array<number>(16).fill(IMAGE_TOKEN_ID), 66, 316];
      const r = await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: feats } }, { maxNewTokens: 12, stopTokenIds: [] });
      // This prompt makes the random-weight fixture generate the placeholder id early (step 6 at seed 0).
      expect(r.tokens.slice(0, -1)).toContain(IMAGE_TOKEN_ID);

      const embed = await ortSession(join(dir, 'embed_tokens.onnx'));
      const dec = await ortSession(join(dir, 'decoder_model_merged.onnx'));
      const seq = [...ids], ref: number[] = [];
      const past: Record<string, ort.Tensor> = {};
      for (let i = 0; i < 2; i++) for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = f32(new Float32Array(0), [1, 2, 0, 16]);
      for (let k = 0; k < 12; k++) {
        const e = (await embed.run({ input_ids: i64(seq, [1, seq.length]) })).inputs_embeds as ort.Tensor;
        const rows = (e.data as Float32Array).slice();
        rows.set(mergeFeaturesTs(ids, rows.subarray(0, ids.length * 64), feats, IMAGE_TOKEN_ID, 64));
        const mask = seq.map(() => 1);
        const out = await dec.run({ inputs_embeds: f32(rows, [1, seq.length, 64]), attention_mask: i64(mask, [1, seq.length]),
          position_ids: i64(positions(mask), [1, seq.length]), ...past });
        const logits = (out.logits as ort.Tensor).data as Float32Array;
        const tok = argmaxRow(logits.subarray(logits.length - 320));
        ref.push(tok); seq.push(tok);
      }
      expect(r.tokens).toEqual(ref);
    } finally {
      await set.close();
    }
  });
});
