/**
 * The TABM ring across real worker threads: workers open the ring from its handle and claim, write
 * and commit slots themselves (Atomics on the shared state words), with no message per slot. The
 * workers run the compiled ring (dist/, as the encoder worker does); the oracle for the bytes is the
 * producer's own deterministic formula, recomputed here.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TokenRingBuffer } from '../../src/run/buffers/ring-buffer.js';

const compiled = fileURLToPath(new URL('../../dist/run/buffers/ring-buffer.js', import.meta.url));

// A producer thread: item i of producer p is [tokens=i%3+1 rows of 4 floats], value p*1e6 + i*100 + j.
const PRODUCER = `
const { workerData, parentPort } = require('node:worker_threads');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const { TokenRingBuffer } = await import(workerData.ringUrl);
  const ring = TokenRingBuffer.open(workerData.handle);
  let waited = 0;
  try {
    for (let i = 0; i < workerData.n; i++) {
      if (workerData.delayMs) await sleep(workerData.delayMs);
      let lease = ring.tryAcquireWrite();
      if (!lease) { waited++; lease = await ring.acquireWrite(); }
      const tokens = (i % 3) + 1;
      const v = lease.view('float32', tokens * 4);
      for (let j = 0; j < v.length; j++) v[j] = workerData.p * 1e6 + i * 100 + j;
      lease.commit({ tokens, dims: [tokens, 4], dtype: 'float32', tag: 'p' + workerData.p + ':' + i, numbers: [workerData.p, i] });
    }
    parentPort.postMessage({ done: true, waited });
  } catch (e) {
    parentPort.postMessage({ done: false, code: e.code, waited });
  }
})();`;

interface Report { done: boolean; waited: number; code?: string }

function producer(ring: TokenRingBuffer, p: number, n: number, delayMs = 0): Promise<Report> {
  const w = new Worker(PRODUCER, { eval: true, workerData: { ringUrl: pathToFileURL(compiled).href, handle: ring.handle(), p, n, delayMs } });
  return new Promise<Report>((res, rej) => { w.once('message', (m: Report) => { void w.terminate(); res(m); }); w.once('error', rej); });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function consume(ring: TokenRingBuffer, total: number, delayMs: number) {
  const got: { p: number; i: number; ok: boolean; tag: string }[] = [];
  let waited = 0;
  for (let k = 0; k < total; k++) {
    let rd = ring.tryAcquireRead();
    if (!rd) { waited++; rd = await ring.acquireRead({ timeoutMs: 10_000 }); }
    const [p, i] = rd.meta.numbers as [number, number];
    const tokens = (i % 3) + 1;
    const v = rd.view('float32', tokens * 4);
    got.push({ p, i, tag: rd.meta.tag!, ok: rd.meta.tokens === tokens && v.every((x, j) => x === p * 1e6 + i * 100 + j) });
    if (delayMs) await sleep(delayMs);
    rd.release();
  }
  return { got, waited };
}

describe.runIf(existsSync(compiled))('TABM ring across worker threads (needs `npx tsc -p tsconfig.json`)', () => {
  it('a producer thread faster than the consumer is held back by the slots, and every item arrives intact, in order', async () => {
    const ring = new TokenRingBuffer({ slots: 2, slotBytes: 3 * 4 * 4, shared: true });
    const N = 30;
    const [prod, cons] = await Promise.all([producer(ring, 1, N), consume(ring, N, 3)]);
    expect(prod).toMatchObject({ done: true });
    expect(prod.waited).toBeGreaterThan(N / 2); // back-pressure: the producer waited for free slots most of the time
    expect(cons.got.map((g) => g.i)).toEqual([...Array(N).keys()]);
    expect(cons.got.every((g) => g.ok && g.tag === `p1:${g.i}`)).toBe(true);
    expect(ring.stats()).toMatchObject({ free: 2, committed: N, released: N, peakOccupied: 2, pendingWrites: 0, pendingReads: 0 });
  }, 20_000);

  it('a consumer faster than the producer thread waits for each commit and still sees every item', async () => {
    const ring = new TokenRingBuffer({ slots: 3, slotBytes: 3 * 4 * 4, shared: true });
    const N = 12;
    const [prod, cons] = await Promise.all([producer(ring, 2, N, 4), consume(ring, N, 0)]);
    expect(prod).toMatchObject({ done: true, waited: 0 }); // never short of slots
    expect(cons.waited).toBeGreaterThan(N / 2);
    expect(cons.got.map((g) => g.i)).toEqual([...Array(N).keys()]);
    expect(cons.got.every((g) => g.ok)).toBe(true);
    expect(ring.stats().peakOccupied).toBeLessThanOrEqual(2);
  }, 20_000);

  it('two producer threads share one ring: nothing lost or duplicated, each producer in its own order', async () => {
    const ring = new TokenRingBuffer({ slots: 2, slotBytes: 3 * 4 * 4, shared: true });
    const N = 20;
    const [a, b, cons] = await Promise.all([producer(ring, 1, N), producer(ring, 2, N), consume(ring, 2 * N, 1)]);
    expect([a.done, b.done]).toEqual([true, true]);
    expect(cons.got.every((g) => g.ok)).toBe(true);
    for (const p of [1, 2]) expect(cons.got.filter((g) => g.p === p).map((g) => g.i)).toEqual([...Array(N).keys()]);
    expect(ring.stats()).toMatchObject({ free: 2, committed: 2 * N, released: 2 * N });
  }, 20_000);

  it('close on this thread wakes a producer thread blocked on a full ring with E_TABM_CLOSED', async () => {
    const ring = new TokenRingBuffer({ slots: 1, slotBytes: 3 * 4 * 4, shared: true });
    const prod = producer(ring, 3, 5);
    // The producer fills the one slot and blocks on the second item.
    for (let t = 0; ring.stats().pendingWrites === 0 && t < 500; t++) await sleep(10);
    expect(ring.stats()).toMatchObject({ ready: 1, pendingWrites: 1 });
    ring.close('consumer gave up');
    expect(await prod).toMatchObject({ done: false, code: 'E_TABM_CLOSED' });
    // What was committed before the close still drains.
    const rd = ring.tryAcquireRead()!;
    expect(rd.meta.tag).toBe('p3:0');
    rd.release();
  }, 20_000);
});
