/**
 * The key acceptance test of the runtime: greedy generation over a partitioned brick set (encoder →
 * embed → merge → decoder with KV cache) gives the same tokens as the monolithic model re-run on the
 * whole sequence every step.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { ChatSession, generate } from '../../src/run/generation/chat-session.js';
import { AUDIO_TOKEN_ID, cleanupFixtures, fixtureDir, IMAGE_TOKEN_ID } from '../fixtures/index.js';
import { brickSetDir, detFloat, f32, monolithicGreedy, prompt, releaseSessions } from './helpers.js';

const STEPS = 12;
const opened: BrickSet[] = [];
const open = async (name: 'llava' | 'audio' | 'llava-monolithic') => {
  const set = await openBrickSet(await brickSetDir(name), { threads: 1 });
  opened.push(set);
  return set;
};

afterAll(async () => {
  for (const s of opened) await s.close();
  await releaseSessions();
  await cleanupFixtures();
});

describe('greedy generation equals the monolithic model', () => {
  it('llava: image + text, with and without left padding', async () => {
    const set = await open('llava');
    const mono = await fixtureDir('llava-monolithic');
    expect(set.encoders.map((e) => [e.kind, e.placeholderTokenId])).toEqual([['vision', IMAGE_TOKEN_ID]]);
    for (const [pad, phase] of [[0, 0], [3, 1.3]] as const) {
      const pixels = detFloat(3 * 32 * 32, phase);
      const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16, pad);
      const ref = await monolithicGreedy(mono.file, { pixel_values: f32(pixels, [1, 3, 32, 32]) }, ids, mask, STEPS);
      const enc = await set.encode('vision', f32(pixels, [1, 3, 32, 32]));
      expect(enc.rows).toBe(16);
      const r = await generate(set, { inputIds: ids, attentionMask: mask, features: { [IMAGE_TOKEN_ID]: enc.features } },
        { maxNewTokens: STEPS, stopTokenIds: [] });
      expect(r.tokens).toEqual(ref);
      expect(r.stopReason).toBe('max-tokens');
      expect(r.stats).toMatchObject({ promptTokens: ids.length, prefillTokens: ids.length, reusedTokens: 0, newTokens: STEPS });
      expect(Object.keys(r.stats.brickMs).sort()).toEqual(['decoder', 'embed']);
    }
  });

  it('the image matters: another image changes the answer, and the reference follows', async () => {
    const set = await open('llava');
    const mono = await fixtureDir('llava-monolithic');
    const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16);
    const answers: number[][] = [];
    for (const phase of [0, 2]) {
      const px = f32(detFloat(3 * 32 * 32, phase).map((v) => 3 * v), [1, 3, 32, 32]);
      const ref = await monolithicGreedy(mono.file, { pixel_values: px }, ids, mask, STEPS);
      const r = await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: (await set.encode(IMAGE_TOKEN_ID, px)).features } },
        { maxNewTokens: STEPS, stopTokenIds: [] });
      expect(r.tokens).toEqual(ref);
      answers.push([...r.tokens]);
    }
    expect(answers[0]).not.toEqual(answers[1]);
  });

  it('audio: audio features + text', async () => {
    const set = await open('audio');
    const mono = await fixtureDir('audio-monolithic');
    const mel = detFloat(16 * 64, 0.7);
    const { ids, mask } = prompt(AUDIO_TOKEN_ID, 32, 2);
    const ref = await monolithicGreedy(mono.file, { input_features: f32(mel, [1, 16, 64]) }, ids, mask, STEPS);
    const enc = await set.encode('audio', f32(mel, [1, 16, 64]));
    expect(enc.rows).toBe(32);
    const r = await new ChatSession(set).generate({ inputIds: ids, attentionMask: mask, features: { [AUDIO_TOKEN_ID]: enc.features } },
      { maxNewTokens: STEPS, stopTokenIds: [] });
    expect(r.tokens).toEqual(ref);
  });

  it('a brick set cut from the monolithic graph (decoder without KV cache) gives the same tokens', async () => {
    const set = await open('llava-monolithic');
    expect(set.decoder.kv).toBeUndefined();
    const mono = await fixtureDir('llava-monolithic');
    const pixels = detFloat(3 * 32 * 32, 0.4);
    const { ids, mask } = prompt(IMAGE_TOKEN_ID, 16, 1);
    const ref = await monolithicGreedy(mono.file, { pixel_values: f32(pixels, [1, 3, 32, 32]) }, ids, mask, 8);
    const enc = await set.encode('vision', f32(pixels, [1, 3, 32, 32]));
    const r = await generate(set, { inputIds: ids, attentionMask: mask, features: { [IMAGE_TOKEN_ID]: enc.features } },
      { maxNewTokens: 8, stopTokenIds: [] });
    expect(r.tokens).toEqual(ref);
  });
});
