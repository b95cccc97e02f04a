/**
 * Prefix reuse across turns: a ChatSession keeps the KV cache of the conversation; a new turn that
 * repeats the cached prefix prefills only its new suffix and must give exactly the tokens a fresh run
 * of the whole conversation gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { ChatSession, generate } from '../../src/run/generation/chat-session.js';
import { cleanupFixtures, IMAGE_TOKEN_ID, SPECIAL_TOKENS } from '../fixtures/index.js';
import { brickSetDir, detFloat, f32, prompt, releaseSessions } from './helpers.js';

let set: BrickSet;
let image: Float32Array;
let other: Float32Array;
beforeAll(async () => {
  set = await openBrickSet(await brickSetDir('llava'), { threads: 1 });
  image = (await set.encode('vision', f32(detFloat(3 * 32 * 32, 0.2), [1, 3, 32, 32]))).features.slice();
  other = (await set.encode('vision', f32(detFloat(3 * 32 * 32, 2.5), [1, 3, 32, 32]))).features.slice();
});
afterAll(async () => {
  await set.close();
  await releaseSessions();
  await cleanupFixtures();
});

const OPTS = { maxNewTokens: 8, stopTokenIds: [] as number[] };
const { '<|im_start|>': START, '<|im_end|>': END } = SPECIAL_TOKENS;

describe('prefix reuse', () => {
  it('turn 2 prefills only the new tokens and equals a fresh full run', async () => {
    const chat = new ChatSession(set);
    const { ids } = prompt(IMAGE_TOKEN_ID, 16);
    const t1 = await chat.generate({ inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    expect(t1.stats.reusedTokens).toBe(0);
    // The cache holds the prompt and every generated token but the last (never fed).
    expect(chat.tokens).toEqual([...ids, ...t1.tokens.slice(0, -1)]);

    const turn2 = [...ids, ...t1.tokens, END, START, 40, 41, 42, END, START];
    const r2 = await chat.generate({ inputIds: turn2, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    const fresh = await generate(set, { inputIds: turn2, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    expect(r2.tokens).toEqual(fresh.tokens);
    expect(r2.stats.reusedTokens).toBe(ids.length + t1.tokens.length - 1);
    expect(r2.stats.prefillTokens).toBe(turn2.length - r2.stats.reusedTokens);
    expect(fresh.stats.reusedTokens).toBe(0);

    // Turn 3 without the image features: its placeholder rows are all in the cached prefix.
    const turn3 = [...turn2, ...r2.tokens, END, START, 50, 51];
    const r3 = await chat.generate({ inputIds: turn3 }, OPTS);
    expect(r3.tokens).toEqual((await generate(set, { inputIds: turn3, features: { [IMAGE_TOKEN_ID]: image } }, OPTS)).tokens);
    expect(r3.stats.reusedTokens).toBeGreaterThan(turn2.length);
  });

  it('a divergent turn truncates the cache at the divergence point', async () => {
    const chat = new ChatSession(set);
    const { ids } = prompt(IMAGE_TOKEN_ID, 16, 0, 8);
    await chat.generate({ inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    const edited = [...ids];
    const at = ids.length - 4;
    edited[at] = 77;
    const r = await chat.generate({ inputIds: edited, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    expect(r.stats.reusedTokens).toBe(at);
    expect(r.tokens).toEqual((await generate(set, { inputIds: edited, features: { [IMAGE_TOKEN_ID]: image } }, OPTS)).tokens);

    // Asking the same prompt again reuses all of it but its last token (whose logits start the answer).
    const again = await chat.generate({ inputIds: edited, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    expect(again.stats.reusedTokens).toBe(edited.length - 1);
    expect(again.tokens).toEqual(r.tokens);
  });

  it('a different image behind the same placeholder tokens is not reused', async () => {
    const chat = new ChatSession(set);
    const { ids } = prompt(IMAGE_TOKEN_ID, 16);
    await chat.generate({ inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    const r = await chat.generate({ inputIds: ids, features: { [IMAGE_TOKEN_ID]: other } }, OPTS);
    expect(r.stats.reusedTokens).toBe(ids.indexOf(IMAGE_TOKEN_ID));
    expect(r.tokens).toEqual((await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: other } }, OPTS)).tokens);
  });

  it('placeholders outside the cache need features', async () => {
    const chat = new ChatSession(set);
    await chat.generate({ inputIds: [START, 5, 6, END] }, OPTS);
    const { ids } = prompt(IMAGE_TOKEN_ID, 16);
    await expect(chat.generate({ inputIds: ids }, OPTS)).rejects.toMatchObject({ code: 'E_MERGE_MISSING' });
    // The failed turn left the session usable.
    const r = await chat.generate({ inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } }, OPTS);
    expect(r.tokens).toEqual((await generate(set, { inputIds: ids, features: { [IMAGE_TOKEN_ID]: image } }, OPTS)).tokens);
  });
});
