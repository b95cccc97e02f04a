/**
 * The chat conversation without a UI: command parsing, multi-turn answers against the monolithic graph
 * re-run from scratch by plain ORT (so KV reuse across turns cannot hide a wrong answer), attachments,
 * reset, and user errors that leave the conversation usable.
 */
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Conversation, formatStats, parseInput, statusLine } from '../../src/chat/session.js';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import type { TensorLike } from '../../src/run/backend.js';
import { AUDIO_TOKEN_ID, IMAGE_TOKEN_ID, cleanupFixtures, fixtureDir, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir, monolithicGreedy, releaseSessions } from '../run/helpers.js';
import ort from 'onnxruntime-node';
import { encodeWavPcm16 } from '../../src/run/inputs/wav.js';

let model: RuntimeModel;
let png: string;
beforeAll(async () => {
  model = await openModel(await brickSetDir('llava'));
  png = join(await fixtureRoot(), 'chat-red.png');
  await sharp({ create: { width: 40, height: 24, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toFile(png);
});
afterAll(async () => { await model?.close(); await releaseSessions(); await cleanupFixtures(); });

describe('parseInput', () => {
  it('tells messages from commands', () => {
    expect(parseInput('hello /there')).toEqual({ kind: 'message', text: 'hello /there' });
    expect(parseInput('  ')).toEqual({ kind: 'empty' });
    expect(parseInput('//image is a command')).toEqual({ kind: 'message', text: '/image is a command' });
    expect(parseInput('/image "my cat.png"')).toEqual({ kind: 'attach', media: 'image', path: 'my cat.png' });
    expect(parseInput('/audio a.wav')).toEqual({ kind: 'attach', media: 'audio', path: 'a.wav' });
    expect(parseInput('/image').kind).toBe('unknown');
    expect(parseInput('/RESET').kind).toBe('reset');
    expect(parseInput('/stats').kind).toBe('stats');
    expect(parseInput('/quit').kind).toBe('exit');
    expect(parseInput('/frobnicate')).toEqual({ kind: 'unknown', name: '/frobnicate' });
  });
});

describe('Conversation', () => {
  it('answers turn after turn, reusing the cached prefix, with the tokens a from-scratch ORT run gives', async () => {
    const mono = await fixtureDir('llava-monolithic');
    const c = new Conversation(model, { maxNewTokens: 6, sampling: { temperature: 0 } });
    const px = await model.mediaInput('image', { file: png }) as TensorLike;
    const pixels = { pixel_values: new ort.Tensor('float32', px.data as Float32Array, px.dims) };

    await c.attach('image', png);
    expect(c.attachments.image).toEqual([png]);
    let streamed = '';
    const first = await c.send('What colour is it?', { onText: (t) => { streamed += t; } });
    expect(c.attachments.image).toEqual([]);
    expect(streamed.trim()).toBe(first.text);
    const ids1 = [...c.lastPromptIds];
    expect(ids1.filter((t) => t === IMAGE_TOKEN_ID)).toHaveLength(16);
    expect(first.stats.reusedTokens).toBe(0);
    expect(first.stats.bricks.vision).toBeGreaterThan(0);
    expect(first.stats.encodeMs).toBeGreaterThan(0);
    const ref1 = await monolithicGreedy(mono.file, pixels, ids1, ids1.map(() => 1), first.tokens.length);
    expect(first.tokens).toEqual(ref1);

    const second = await c.send('And now?');
    const ids2 = c.lastPromptIds;
    // The new prompt starts with the whole first prompt, whose KV came from the cache; the image was not re-encoded.
    expect(ids2.slice(0, ids1.length)).toEqual(ids1);
    expect(second.stats.reusedTokens).toBeGreaterThanOrEqual(ids1.length);
    expect(second.stats.prefillTokens).toBe(ids2.length - second.stats.reusedTokens);
    expect(second.stats.bricks.vision).toBeUndefined();
    const ref2 = await monolithicGreedy(mono.file, pixels, ids2, ids2.map(() => 1), second.tokens.length);
    expect(second.tokens).toEqual(ref2);
    expect(c.history.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant']);
    expect(c.context.tokens).toBeGreaterThan(ids2.length);

    const s = formatStats(c.lastStats!);
    expect(s).toContain(`${second.stats.reusedTokens} reused`);
    expect(statusLine(c)).toMatch(/^decode [\d.]+ tok\/s · prefill \d+ tok\/s · TTFT \d+ ms · ctx \d+\/512 · RSS \d+ MB/);

    c.reset();
    expect([c.history.length, c.context.tokens, c.lastStats]).toEqual([0, 0, undefined]);
    const again = await c.send('What colour is it?');
    expect(again.stats.reusedTokens).toBe(0);
  });

  it('a second image in a later turn is merged after the first one', async () => {
    const c = new Conversation(model, { maxNewTokens: 3, sampling: { temperature: 0 } });
    await c.attach('image', png);
    await c.send('one');
    await c.attach('image', png);
    const r = await c.send('two');
    expect(c.lastPromptIds.filter((t) => t === IMAGE_TOKEN_ID)).toHaveLength(32);
    expect(r.stats.bricks.vision).toBeGreaterThan(0);
  });

  it('/audio attaches a WAV clip for an audio model', async () => {
    const m = await openModel(await brickSetDir('audio'));
    try {
      const wav = join(await fixtureRoot(), 'chat-tone.wav');
      const b = encodeWavPcm16(Int16Array.from({ length: 8000 }, (_, i) => Math.round(8000 * Math.sin(i * 0.05))));
      await (await import('node:fs/promises')).writeFile(wav, b);
      const c = new Conversation(m, { maxNewTokens: 3 });
      expect(await c.handle(`/audio ${wav}`)).toMatchObject({ kind: 'info' });
      expect(await c.handle('/image x.png')).toMatchObject({ kind: 'error', error: { code: 'E_BRICKS_ROLE' } });
      const r = await c.handle('what was that?');
      expect(r.kind === 'answer' && r.result.stats.bricks.audio).toBeGreaterThan(0);
      expect(c.lastPromptIds.filter((t) => t === AUDIO_TOKEN_ID).length).toBeGreaterThan(0);
    } finally {
      await m.close();
    }
  });

  it('user errors come back as outcomes and the conversation goes on', async () => {
    const c = new Conversation(model, { maxNewTokens: 3 });
    expect(await c.handle('/image /no/such/file.png')).toMatchObject({ kind: 'error', error: { code: 'E_IMAGE' } });
    expect(await c.handle('/audio x.wav')).toMatchObject({ kind: 'error', error: { code: 'E_BRICKS_ROLE' } });
    expect(await c.handle('/nope')).toMatchObject({ kind: 'error', error: { code: 'E_USAGE' } });
    expect(await c.handle('/stats')).toEqual({ kind: 'info', text: 'no turn yet' });
    expect(await c.handle('/exit')).toEqual({ kind: 'exit' });
    const notImage = join(await fixtureRoot(), 'chat-not-image.png');
    await (await import('node:fs/promises')).writeFile(notImage, 'hello');
    await c.attach('image', notImage);
    expect(await c.handle('look')).toMatchObject({ kind: 'error', error: { code: 'E_IMAGE' } });
    // The bad attachment is dropped, nothing was added to the history.
    expect([c.attachments.image, c.history]).toEqual([[], []]);
    const ok = await c.handle('hello');
    expect(ok.kind).toBe('answer');

    const tiny = new Conversation(model, { maxNewTokens: 3, maxContext: 40 });
    expect(await tiny.handle('a rather long question that will not fit in forty tokens of context, surely')).toMatchObject({ kind: 'error', error: { code: 'E_CONTEXT_OVERFLOW' } });
  });

  it('an aborted answer stops early and stays in the history', async () => {
    const c = new Conversation(model, { maxNewTokens: 50, sampling: { temperature: 0 } });
    const ac = new AbortController();
    let n = 0;
    const r = await c.send('tell me everything', { signal: ac.signal, onText: () => { if (++n === 2) ac.abort(); } });
    expect(r.stopReason).toBe('aborted');
    expect(r.tokens.length).toBeLessThan(50);
    expect(c.history).toHaveLength(2);
  });
});
