/**
 * The official `openai` client against a live server on the embedded model. Oracle: PyTorch's own
 * greedy answers to held-out questions (eval/reference.json), restricted to those that are correct;
 * the server must give exactly those answers, streaming or not, for typed and spoken questions.
 * Errors are checked by HTTP status and the OpenAI error JSON shape; KV reuse by `cached_tokens` and
 * by the answer to the same conversation with a cold cache.
 */
import OpenAI, { APIError } from 'openai';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toneWav } from '../../src/run/inputs/wav.js';
import { MODEL_ID, agreedRows, dataUrl, evalFile, serveEmbedded, type EvalRow, type Live } from './helpers.js';

let live: Live;
let client: OpenAI;
let rows: Awaited<ReturnType<typeof agreedRows>>;
beforeAll(async () => {
  // One cache slot, so a request of another conversation evicts the previous one (the cold-cache oracle).
  live = await serveEmbedded({ apiKey: 'sk-test', cacheSlots: 1, limits: { maxImagePixels: 100 * 100, maxBodyBytes: 256 * 1024, maxAudioSeconds: 3 } });
  client = new OpenAI({ baseURL: `${live.url}/v1`, apiKey: 'sk-test', maxRetries: 0 });
  rows = await agreedRows();
});
afterAll(async () => { await live?.close(); });

type Part = OpenAI.Chat.Completions.ChatCompletionContentPart;
async function parts(r: EvalRow): Promise<Part[]> {
  const image: Part = { type: 'image_url', image_url: { url: dataUrl(await evalFile(r.image)) } };
  if (r.modality === 'spoken') return [image, { type: 'input_audio', input_audio: { data: (await evalFile(r.audio!)).toString('base64'), format: 'wav' } }];
  return [{ type: 'text', text: r.question }, image];
}

describe('OpenAI API (openai client)', () => {
  it('lists the model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL_ID]);
  });

  it('answers image questions as PyTorch does, whole and streamed', async () => {
    const typed = rows.filter((r) => r.modality === 'typed').slice(0, 4);
    for (const r of typed) {
      const c = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: await parts(r) }] });
      expect(c.choices[0]!.message.content?.trim()).toBe(r.pytorch);
      expect(c.choices[0]!.finish_reason).toBe('stop');
      expect(c.usage!.total_tokens).toBe(c.usage!.prompt_tokens + c.usage!.completion_tokens);
      const stream = await client.chat.completions.create({ model: MODEL_ID, stream: true, messages: [{ role: 'user', content: await parts(r) }] });
      let text = '', deltas = 0, usage: OpenAI.CompletionUsage | undefined, finish: string | null | undefined;
      for await (const ch of stream) {
        if (ch.choices[0]?.delta.content) { text += ch.choices[0].delta.content; deltas++; }
        if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
        if (ch.usage) usage = ch.usage;
      }
      expect(text.trim()).toBe(r.pytorch);
      expect(deltas).toBeGreaterThanOrEqual(1);
      expect(finish).toBe('stop');
      expect(usage?.completion_tokens).toBe(c.usage!.completion_tokens);
    }
  });

  it('answers a spoken question (input_audio WAV + image) as PyTorch does', async () => {
    for (const r of rows.filter((x) => x.modality === 'spoken').slice(0, 2)) {
      const c = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: await parts(r) }] });
      expect(c.choices[0]!.message.content?.trim()).toBe(r.pytorch);
    }
  });

  it('reuses the KV cache of the previous turn without changing the answer', async () => {
    const [a, b] = rows.filter((r) => r.modality === 'typed').slice(4, 6);
    const first = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: await parts(a!) }] });
    const convo: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
      { role: 'user', content: await parts(a!) }, { role: 'assistant', content: first.choices[0]!.message.content },
      { role: 'user', content: b!.question },
    ];
    const warm = await client.chat.completions.create({ model: MODEL_ID, messages: convo });
    expect(warm.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThanOrEqual(first.usage!.prompt_tokens);
    // Another conversation takes the only slot; the same conversation again starts from a cold cache.
    await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: 'how many shapes are there?' }] });
    const cold = await client.chat.completions.create({ model: MODEL_ID, messages: convo });
    expect(cold.usage!.prompt_tokens_details!.cached_tokens).toBeLessThan(first.usage!.prompt_tokens);
    expect(warm.choices[0]!.message.content).toBe(cold.choices[0]!.message.content);
  });

  it('reuses the KV cache of a shared system prompt across conversations', async () => {
    const system = 'You answer questions about a picture of coloured shapes on a three by three grid, with a short exact answer.';
    const [a, b] = rows.filter((r) => r.modality === 'typed').slice(10, 12);
    const ask = async (r: EvalRow) => client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'system', content: system }, { role: 'user', content: await parts(r) }] });
    await ask(a!);
    const second = await ask(b!);
    // The system message alone is far more than 20 tokens of this byte-level tokenizer.
    expect(second.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(20);
  });

  it('honours max_tokens and stop', async () => {
    const r = rows.find((x) => x.modality === 'typed' && x.pytorch.split(' ').length > 4)!;
    const short = await client.chat.completions.create({ model: MODEL_ID, max_completion_tokens: 2, messages: [{ role: 'user', content: await parts(r) }] });
    expect(short.usage!.completion_tokens).toBe(2);
    expect(short.choices[0]!.finish_reason).toBe('length');
    expect(r.pytorch.startsWith(short.choices[0]!.message.content!.trim())).toBe(true);
    const cut = r.pytorch.split(' ')[2]!;
    const stopped = await client.chat.completions.create({ model: MODEL_ID, stop: [` ${cut}`], messages: [{ role: 'user', content: await parts(r) }] });
    expect(stopped.choices[0]!.message.content).toBe(r.pytorch.slice(0, r.pytorch.indexOf(` ${cut}`)));
  });

  it('refuses a wrong API key with 401', async () => {
    const bad = new OpenAI({ baseURL: `${live.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    const e = await bad.models.list().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((e as APIError).status).toBe(401);
    expect((e as APIError).code).toBe('invalid_api_key');
  });

  it('refuses malformed JSON with 400 in the OpenAI error shape', async () => {
    const r = await fetch(`${live.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer sk-test', 'content-type': 'application/json' }, body: '{"model": "shapes-vlm", "messages": [' });
    expect(r.status).toBe(400);
    const j = await r.json() as { error: { type: string; message: string; nanomind_code: string } };
    expect(j.error.type).toBe('invalid_request_error');
    expect(j.error.nanomind_code).toBe('E_SERVE_BAD_JSON');
  });

  it('refuses an oversized image and an oversized body with 413', async () => {
    const big = await sharp({ create: { width: 200, height: 120, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
    const e = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'text', text: 'what?' }, { type: 'image_url', image_url: { url: dataUrl(big) } }] }] }).catch((x: unknown) => x);
    expect((e as APIError).status).toBe(413);
    const huge = 'x'.repeat(300 * 1024);
    const e2 = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: huge }] }).catch((x: unknown) => x);
    expect((e2 as APIError).status).toBe(413);
    const long = toneWav(3.5).toString('base64'); // over this server's 3 s
    const e3 = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: long, format: 'wav' } }] }] }).catch((x: unknown) => x);
    expect((e3 as APIError).status).toBe(413);
  });

  it('refuses what it cannot do with 4xx, and never fetches a URL', async () => {
    const err = (p: Promise<unknown>) => p.then(() => undefined, (x: APIError) => x.status);
    expect(await err(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }))).toBe(404);
    expect(await err(client.chat.completions.create({ model: MODEL_ID, n: 2, messages: [{ role: 'user', content: 'hi' }] }))).toBe(400);
    expect(await err(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'file:///etc/passwd' } }] }] }))).toBe(400);
    expect(await err(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `${live.url}/` } }] }] }))).toBe(400);
    expect(await err(client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } }] }] }))).toBe(400);
    expect(await err(client.chat.completions.create({ model: MODEL_ID, max_tokens: 100_000, messages: [{ role: 'user', content: 'hi' }] }))).toBe(400);
  });
});
