/**
 * The official `ollama` client against a live server on the embedded model. Oracle: PyTorch's greedy
 * answers to held-out image questions (eval/reference.json, only those that are correct), through
 * /api/chat and /api/generate, streamed (NDJSON) and not; model listing endpoints; 401 without the key.
 */
import { Ollama } from 'ollama';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL_ID, agreedRows, evalFile, serveEmbedded, type Live } from './helpers.js';

let live: Live;
let ollama: Ollama;
let rows: Awaited<ReturnType<typeof agreedRows>>;
beforeAll(async () => {
  live = await serveEmbedded({ apiKey: 'k-ollama' });
  ollama = new Ollama({ host: live.url, headers: { Authorization: 'Bearer k-ollama' } });
  rows = (await agreedRows()).filter((r) => r.modality === 'typed');
});
afterAll(async () => { await live?.close(); });

describe('Ollama API (ollama client)', () => {
  it('describes the model: tags, show, version', async () => {
    const tags = await ollama.list();
    expect(tags.models.map((m) => m.name)).toEqual([`${MODEL_ID}:latest`]);
    expect(tags.models[0]!.size).toBeGreaterThan(1e6);
    const show = await ollama.show({ model: MODEL_ID });
    expect(show.capabilities).toEqual(expect.arrayContaining(['completion', 'vision', 'audio']));
    expect((await ollama.version()).version).toBe('0.1.0');
  });

  it('answers image questions through /api/chat as PyTorch does, whole and streamed', async () => {
    for (const r of rows.slice(6, 9)) {
      const image = new Uint8Array(await evalFile(r.image));
      const whole = await ollama.chat({ model: MODEL_ID, messages: [{ role: 'user', content: r.question, images: [image] }] });
      expect(whole.message.content.trim()).toBe(r.pytorch);
      expect(whole.done).toBe(true);
      expect(whole.eval_count).toBeGreaterThan(0);
      let text = '', last: { done: boolean; done_reason: string; prompt_eval_count: number } | undefined, parts = 0;
      for await (const ch of await ollama.chat({ model: `${MODEL_ID}:latest`, stream: true, messages: [{ role: 'user', content: r.question, images: [image] }] })) {
        text += ch.message.content;
        parts++;
        last = ch;
      }
      expect(text.trim()).toBe(r.pytorch);
      expect(parts).toBeGreaterThan(1);
      expect(last).toMatchObject({ done: true, done_reason: 'stop', prompt_eval_count: whole.prompt_eval_count });
    }
  });

  it('answers through /api/generate (base64 images, system prompt, num_predict)', async () => {
    const r = rows[9]!;
    const image = (await evalFile(r.image)).toString('base64');
    const g = await ollama.generate({ model: MODEL_ID, prompt: r.question, images: [image] });
    expect(g.response!.trim()).toBe(r.pytorch);
    let text = '';
    for await (const ch of await ollama.generate({ model: MODEL_ID, prompt: r.question, images: [image], stream: true })) text += ch.response;
    expect(text.trim()).toBe(r.pytorch);
    const one = await ollama.generate({ model: MODEL_ID, prompt: r.question, images: [image], options: { num_predict: 1 } });
    expect(one.eval_count).toBe(1);
    expect(one.done_reason).toBe('length');
    // Ollama's "load the model" call: an empty prompt answers at once.
    expect((await ollama.generate({ model: MODEL_ID, prompt: '' })).done_reason).toBe('load');
  });

  it('refuses a missing key with 401, an unknown model with 404, JSON format with 400', async () => {
    const anon = new Ollama({ host: live.url });
    const status = (p: Promise<unknown>) => p.then(() => 0, (e: { status_code: number }) => e.status_code);
    expect(await status(anon.list())).toBe(401);
    expect(await status(anon.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }] }))).toBe(401);
    expect(await status(ollama.chat({ model: 'llama3', messages: [{ role: 'user', content: 'hi' }] }))).toBe(404);
    expect(await status(ollama.chat({ model: MODEL_ID, format: 'json', messages: [{ role: 'user', content: 'hi' }] }))).toBe(400);
    expect(await status(ollama.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi', images: ['bm90IGFuIGltYWdl'] }] }))).toBe(400);
  });
});
