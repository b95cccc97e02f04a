/**
 * Generation controls: stop tokens, stop strings with streaming text, the onToken callback, abort,
 * max new tokens, seeded sampling, and stats.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import { generate, type TokenEvent } from '../../src/run/generation/chat-session.js';
import { TextStream } from '../../src/run/generation/text-stream.js';
import { cleanupFixtures } from '../fixtures/index.js';
import { brickSetDir, releaseSessions } from './helpers.js';

let set: BrickSet;
let greedy: readonly number[];
const IDS = [315, 17, 99, 250, 3, 4, 128, 200, 316, 315];
/** One character per token: enough to test text handling without a tokenizer. */
const decode = (ids: readonly number[]) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join('');

beforeAll(async () => {
  set = await openBrickSet(await brickSetDir('llava'), { threads: 1 });
  greedy = (await generate(set, { inputIds: IDS }, { maxNewTokens: 16, stopTokenIds: [] })).tokens;
});
afterAll(async () => {
  await set.close();
  await releaseSessions();
  await cleanupFixtures();
});

describe('stopping', () => {
  it('eos ids come from generation_config.json; a stop token ends generation and is returned', async () => {
    expect(set.eosTokenIds).toEqual([316]);
    const stop = greedy[5]!;
    const first = greedy.indexOf(stop);
    const r = await generate(set, { inputIds: IDS }, { maxNewTokens: 16, stopTokenIds: [stop] });
    expect(r.stopReason).toBe('eos');
    expect(r.tokens).toEqual(greedy.slice(0, first + 1));
  });

  it('stop strings cut the text, and the stream never shows them', async () => {
    const full = decode(greedy);
    const stop = full.slice(6, 8);
    const at = full.indexOf(stop);
    const deltas: string[] = [];
    const events: TokenEvent[] = [];
    const r = await generate(set, { inputIds: IDS }, {
      maxNewTokens: 16, stopTokenIds: [], stopStrings: [stop], decode,
      onToken: (e) => { events.push(e); deltas.push(e.text ?? ''); },
    });
    expect(r.stopReason).toBe('stop-string');
    expect(r.text).toBe(full.slice(0, at));
    expect(r.tokens).toEqual(greedy.slice(0, at + stop.length));
    expect(deltas.join('')).toBe(r.text);
    expect(events.map((e) => e.token)).toEqual(r.tokens);
    expect(events.map((e) => e.index)).toEqual(r.tokens.map((_, i) => i));
  });

  it('text held back at the end is delivered with the last token', async () => {
    // A stop string starting with the last token's character is held back until generation ends.
    const last = decode(greedy.slice(3, 4));
    const deltas: string[] = [];
    const r = await generate(set, { inputIds: IDS }, {
      maxNewTokens: 4, stopTokenIds: [], decode, stopStrings: [`${last}never-generated`], onToken: (e) => { deltas.push(e.text ?? ''); },
    });
    expect(r.stopReason).toBe('max-tokens');
    expect(deltas.at(-1)!.endsWith(last)).toBe(true);
    expect(deltas.join('')).toBe(r.text);
    expect(r.text).toBe(decode(greedy.slice(0, 4)));
  });

  it('max new tokens, the callback and an abort signal stop generation', async () => {
    const r = await generate(set, { inputIds: IDS }, { maxNewTokens: 3, stopTokenIds: [], decode });
    expect(r).toMatchObject({ stopReason: 'max-tokens', tokens: greedy.slice(0, 3), text: decode(greedy.slice(0, 3)) });
    const c = await generate(set, { inputIds: IDS }, { maxNewTokens: 16, stopTokenIds: [], onToken: (e) => e.index < 4 });
    expect(c).toMatchObject({ stopReason: 'callback', tokens: greedy.slice(0, 5) });
    const ac = new AbortController();
    const a = await generate(set, { inputIds: IDS }, { maxNewTokens: 16, stopTokenIds: [], signal: ac.signal, onToken: (e) => { if (e.index === 1) ac.abort(); } });
    expect(a).toMatchObject({ stopReason: 'aborted', tokens: greedy.slice(0, 2) });
  });
});

describe('sampling', () => {
  it('temperature 0 is greedy; a seed replays the same tokens', async () => {
    const g = await generate(set, { inputIds: IDS }, { maxNewTokens: 16, stopTokenIds: [], sampling: { temperature: 0 } });
    expect(g.tokens).toEqual(greedy);
    const opts = { maxNewTokens: 16, stopTokenIds: [], sampling: { temperature: 1.5, topK: 50, topP: 0.95, repetitionPenalty: 1.1, seed: 7 } };
    const a = await generate(set, { inputIds: IDS }, opts);
    const b = await generate(set, { inputIds: IDS }, opts);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.seed).toBe(7);
    const others = await Promise.all([1, 2, 3].map(async (seed) =>
      (await generate(set, { inputIds: IDS }, { ...opts, sampling: { ...opts.sampling, seed } })).tokens.join()));
    expect(others.some((t) => t !== a.tokens.join())).toBe(true);
  });

  it('reports stats', async () => {
    const r = await generate(set, { inputIds: IDS }, { maxNewTokens: 6, stopTokenIds: [] });
    const s = r.stats;
    expect(s).toMatchObject({ promptTokens: IDS.length, prefillTokens: IDS.length, reusedTokens: 0, newTokens: 6 });
    for (const k of ['ttftMs', 'prefillMs', 'prefillTokPerS', 'decodeMs', 'decodeTokPerS', 'totalMs'] as const) expect(s[k]).toBeGreaterThan(0);
    expect(s.ttftMs).toBeGreaterThanOrEqual(s.prefillMs);
    expect(s.brickMs.decoder).toBeGreaterThan(0);
    expect(s.brickMs.embed).toBeGreaterThan(0);
  });
});

describe('TextStream', () => {
  it('holds back incomplete characters and possible stop-string starts', () => {
    const parts: Record<string, string> = { 1: 'he', 2: 'llo', 3: ' wo', 4: '\uFFFD', 5: 'rld', 6: 'EN', 7: 'D!' };
    const dec = (ids: readonly number[]) => {
      const s = ids.map((i) => parts[i]).join('');
      return s.replace('\uFFFDrld', 'ö rld');
    };
    const st = new TextStream(dec, ['END']);
    expect(st.push([1]).delta).toBe('he');
    expect(st.push([1, 2]).delta).toBe('llo');
    expect(st.push([1, 2, 3]).delta).toBe(' wo');
    expect(st.push([1, 2, 3, 4]).delta).toBe(''); // trailing U+FFFD: wait for the rest of the character
    expect(st.push([1, 2, 3, 4, 5]).delta).toBe('ö rld');
    expect(st.push([1, 2, 3, 4, 5, 6]).delta).toBe(''); // 'EN' may become 'END'
    const hit = st.push([1, 2, 3, 4, 5, 6, 7]);
    expect(hit.stopAt).toBe('hello woö rld'.length);
    expect(st.finish(hit.stopAt)).toEqual({ delta: '', text: 'hello woö rld' });
  });
});
