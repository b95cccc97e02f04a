/**
 * Scheduling: one decoder, a bounded FIFO queue. Observed from outside only (HTTP status, Retry-After,
 * /health, /metrics): a full queue answers 429 with Retry-After, a client that disconnects stops its
 * generation at once (generated-token counter and busy gauge), a queued request whose client leaves
 * never runs, and the answer of a request that waited is still PyTorch's (eval/reference.json).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL_ID, agreedRows, dataUrl, evalFile, metric, serveEmbedded, until, type Live } from './helpers.js';

let live: Live;
beforeAll(async () => { live = await serveEmbedded({ maxQueue: 1 }); });
afterAll(async () => { await live?.close(); });

const post = (body: unknown, signal?: AbortSignal) => fetch(`${live.url}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal,
});
/** A generation that runs for ~max_tokens decode steps: end-of-sequence is ignored (llama.cpp's ignore_eos). */
const long = (maxTokens: number) => ({ model: MODEL_ID, stream: true, ignore_eos: true, max_tokens: maxTokens, messages: [{ role: 'user', content: 'describe the image.' }] });
const health = async () => (await (await fetch(`${live.url}/health`)).json()) as { busy: boolean; queue: number };

/** Starts a long streamed generation and resolves once its first token arrived. */
async function startLong(maxTokens: number, ac: AbortController) {
  const res = await post(long(maxTokens), ac.signal);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let seen = '';
  while (!/"content":"[^"]/.test(seen)) seen += dec.decode((await reader.read()).value);
  return reader;
}

describe('queue and cancellation', () => {
  it('answers 429 with Retry-After when the queue is full, and serves the queued request correctly', async () => {
    const row = (await agreedRows()).find((r) => r.modality === 'typed')!;
    const ac = new AbortController();
    const reader = await startLong(200, ac);
    const queued = post({ model: MODEL_ID, messages: [{ role: 'user', content: [{ type: 'text', text: row.question }, { type: 'image_url', image_url: { url: dataUrl(await evalFile(row.image)) } }] }] });
    await until(async () => (await health()).queue === 1);
    const refused = await post({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }] });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await refused.json()) as { error: { type: string } }).error.type).toBe('rate_limit_exceeded');
    ac.abort();
    await reader.cancel().catch(() => undefined);
    const answer = (await (await queued).json()) as { choices: { message: { content: string } }[]; timings: { queue_ms: number } };
    expect(answer.choices[0]!.message.content.trim()).toBe(row.pytorch);
    expect(answer.timings.queue_ms).toBeGreaterThan(0);
    expect(await metric(live.url, 'nanomind_queue_wait_seconds_count')).toBeGreaterThanOrEqual(2);
    expect(await metric(live.url, 'nanomind_time_to_first_token_seconds_count')).toBeGreaterThanOrEqual(2);
    expect(await metric(live.url, 'nanomind_requests_total{api="openai",outcome="refused"}')).toBe(1);
  });

  it('stops a generation as soon as its client disconnects', async () => {
    await until(async () => !(await health()).busy);
    const before = await metric(live.url, 'nanomind_generated_tokens_total');
    const cancelledBefore = await metric(live.url, 'nanomind_requests_total{api="openai",outcome="cancelled"}');
    const ac = new AbortController();
    await startLong(220, ac);
    const t0 = performance.now();
    ac.abort();
    await until(async () => !(await health()).busy, 5000);
    const stoppedMs = performance.now() - t0;
    expect(await metric(live.url, 'nanomind_requests_total{api="openai",outcome="cancelled"}')).toBe(cancelledBefore + 1);
    const generated = (await metric(live.url, 'nanomind_generated_tokens_total')) - before;
    // 220 steps would take seconds; a cancelled one stops within a few steps of the disconnect.
    expect(generated).toBeLessThan(60);
    expect(stoppedMs).toBeLessThan(1000);
  });

  it('drops a queued request whose client left: it never generates', async () => {
    await until(async () => !(await health()).busy);
    const ac = new AbortController();
    const reader = await startLong(120, ac);
    const leaver = new AbortController();
    const gone = post({ model: MODEL_ID, messages: [{ role: 'user', content: 'how many shapes are there?' }] }, leaver.signal).catch((e: Error) => e.name);
    await until(async () => (await health()).queue === 1);
    leaver.abort();
    expect(await gone).toBe('AbortError');
    await until(async () => (await health()).queue === 0);
    const okBefore = await metric(live.url, 'nanomind_requests_total{api="openai",outcome="ok"}');
    ac.abort();
    await reader.cancel().catch(() => undefined);
    await until(async () => !(await health()).busy);
    expect(await metric(live.url, 'nanomind_requests_total{api="openai",outcome="ok"}')).toBe(okBefore);
  });
});
