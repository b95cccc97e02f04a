import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { TokenRingBuffer, slotBytesFor, type ReadLease, type WriteLease } from '../../src/run/buffers/ring-buffer.js';
import { NanomindError } from '../../src/errors.js';
import { codeOf } from '../error-codes.js';

/** Lets every queued microtask and I/O callback run; a macrotask boundary, not a timer. */
const tick = () => new Promise<void>((r) => setImmediate(r));

/** Where a promise stands once everything already queued has run. */
async function settledState(p: Promise<unknown>): Promise<'pending' | 'fulfilled' | 'rejected'> {
  const pending = Symbol('pending');
  await tick();
  return Promise.race([p, Promise.resolve(pending)]).then(
    (v) => (v === pending ? 'pending' : 'fulfilled'),
    () => 'rejected',
  );
}


async function rejectionCode(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(NanomindError);
  return (e as NanomindError).code;
}

const ring = (slots = 3, slotBytes = 64, shared = false) => new TokenRingBuffer({ slots, slotBytes, shared });

describe('slotBytesFor', () => {
  it('multiplies tokens, hidden and the element size', () => {
    expect(slotBytesFor({ tokens: 729, hidden: 896, dtype: 'float32' })).toBe(729 * 896 * 4);
    expect(slotBytesFor({ tokens: 10, hidden: 3, dtype: 'float16' })).toBe(60);
    expect(slotBytesFor({ tokens: 1, hidden: 5, dtype: 'int8' })).toBe(5);
  });
  it('rejects non-positive sizes and unknown dtypes', () => {
    expect(codeOf(() => slotBytesFor({ tokens: 0, hidden: 8, dtype: 'float32' }))).toBe('E_TABM_CONFIG');
    expect(codeOf(() => slotBytesFor({ tokens: 2, hidden: 1.5, dtype: 'float32' }))).toBe('E_TABM_CONFIG');
    expect(codeOf(() => slotBytesFor({ tokens: 2, hidden: 2, dtype: 'complex' as never }))).toBe('E_TABM_CONFIG');
    expect(codeOf(() => slotBytesFor({ tokens: 2, hidden: 2, dtype: 'toString' as never }))).toBe('E_TABM_CONFIG');
  });
});

describe('TokenRingBuffer construction', () => {
  it('uses one buffer, shared when asked', () => {
    const r = ring(4, 100);
    expect(r.buffer).toBeInstanceOf(ArrayBuffer);
    expect(r.stride).toBe(104); // rounded up so every slot starts 8-byte aligned
    expect(r.buffer.byteLength).toBe(4 * 104);
    expect(ring(2, 16, true).buffer).toBeInstanceOf(SharedArrayBuffer);
  });
  it('rejects bad configs', () => {
    expect(codeOf(() => new TokenRingBuffer({ slots: 0, slotBytes: 8 }))).toBe('E_TABM_CONFIG');
    expect(codeOf(() => new TokenRingBuffer({ slots: 2, slotBytes: -1 }))).toBe('E_TABM_CONFIG');
    expect(codeOf(() => new TokenRingBuffer({ slots: 2.5, slotBytes: 8 }))).toBe('E_TABM_CONFIG');
  });
  it('starts with every slot FREE', () => {
    const r = ring(3);
    expect([0, 1, 2].map((i) => r.slotState(i))).toEqual(['FREE', 'FREE', 'FREE']);
    expect(r.stats()).toMatchObject({ free: 3, writing: 0, ready: 0, reading: 0, peakOccupied: 0 });
    expect(codeOf(() => r.slotState(3))).toBe('E_TABM_STATE');
  });
});

describe('slot state machine', () => {
  it('walks FREE → ALLOCATED_FOR_WRITE → READY_TO_READ → ALLOCATED_FOR_READ → FREE', async () => {
    const r = ring(2);
    const w = await r.acquireWrite();
    expect(r.slotState(w.slot)).toBe('ALLOCATED_FOR_WRITE');
    w.view('float32', 2).set([1.5, -2]);
    w.commit({ tokens: 1, dims: [1, 2], tag: 'img0' });
    expect(r.slotState(w.slot)).toBe('READY_TO_READ');
    const rd = await r.acquireRead();
    expect(rd.slot).toBe(w.slot);
    expect(r.slotState(rd.slot)).toBe('ALLOCATED_FOR_READ');
    expect(rd.meta).toEqual({ tokens: 1, dims: [1, 2], tag: 'img0' });
    expect(Array.from(rd.view('float32', 2))).toEqual([1.5, -2]);
    rd.release();
    expect(r.slotState(rd.slot)).toBe('FREE');
    expect(r.stats()).toMatchObject({ free: 2, committed: 1, released: 1, peakOccupied: 1 });
  });

  it('gives no read before a write is committed', async () => {
    const r = ring(2);
    const w = await r.acquireWrite();
    expect(r.tryAcquireRead()).toBeUndefined();
    const read = r.acquireRead();
    expect(await settledState(read)).toBe('pending');
    w.commit({ tokens: 1, dims: [1, 4] });
    expect(await settledState(read)).toBe('fulfilled');
    expect((await read).slot).toBe(w.slot);
  });

  it('an aborted write never becomes readable and frees its slot', async () => {
    const r = ring(1);
    const w = await r.acquireWrite();
    const read = r.acquireRead();
    w.abort();
    expect(r.slotState(w.slot)).toBe('FREE');
    expect(await settledState(read)).toBe('pending');
    const w2 = await r.acquireWrite();
    w2.commit({ tokens: 2, dims: [2, 1] });
    expect((await read).meta.tokens).toBe(2);
  });

  it('does not reuse a slot while it is being read', async () => {
    const r = ring(1);
    const w = await r.acquireWrite();
    w.view('uint8', 4).set([1, 2, 3, 4]);
    w.commit({ tokens: 1, dims: [4] });
    const rd = await r.acquireRead();
    expect(r.tryAcquireWrite()).toBeUndefined();
    const next = r.acquireWrite();
    expect(await settledState(next)).toBe('pending');
    expect(Array.from(rd.view('uint8', 4))).toEqual([1, 2, 3, 4]); // still intact while held
    rd.release();
    expect(await settledState(next)).toBe('fulfilled');
    expect((await next).slot).toBe(rd.slot);
  });

  it('throws E_TABM_STATE on illegal transitions', async () => {
    const r = ring(2);
    const w = await r.acquireWrite();
    w.commit({ tokens: 1, dims: [1] });
    expect(codeOf(() => w.commit({ tokens: 1, dims: [1] }))).toBe('E_TABM_STATE'); // commit twice
    expect(codeOf(() => w.abort())).toBe('E_TABM_STATE'); // abort after commit
    expect(codeOf(() => w.view('float32', 1))).toBe('E_TABM_STATE'); // write after commit
    const rd = await r.acquireRead();
    rd.release();
    expect(codeOf(() => rd.release())).toBe('E_TABM_STATE'); // release twice
    expect(codeOf(() => rd.view('uint8'))).toBe('E_TABM_STATE'); // read after release
    const a = await r.acquireWrite();
    a.abort();
    expect(codeOf(() => a.abort())).toBe('E_TABM_STATE');
    expect(codeOf(() => a.commit({ tokens: 1, dims: [1] }))).toBe('E_TABM_STATE');
  });

  it('a stale lease cannot touch a slot that was handed to someone else', async () => {
    const r = ring(1);
    const first = await r.acquireWrite();
    first.abort();
    const second = await r.acquireWrite();
    expect(second.slot).toBe(first.slot);
    expect(codeOf(() => first.commit({ tokens: 1, dims: [1] }))).toBe('E_TABM_STATE');
    expect(r.slotState(second.slot)).toBe('ALLOCATED_FOR_WRITE');
    second.commit({ tokens: 1, dims: [1] });
    const rd1 = await r.acquireRead();
    rd1.release();
    const w = await r.acquireWrite();
    w.commit({ tokens: 1, dims: [1] });
    await r.acquireRead();
    expect(codeOf(() => rd1.release())).toBe('E_TABM_STATE'); // the slot is being read by the new lease
  });

  it('throws E_TABM_OVERFLOW for views or metadata larger than the slot', async () => {
    const r = ring(2, 10);
    const w = await r.acquireWrite();
    expect(w.view('uint8').length).toBe(10);
    expect(w.view('float32').length).toBe(2); // whole elements only
    expect(w.view('float16', 5).length).toBe(5);
    expect(codeOf(() => w.view('float32', 3))).toBe('E_TABM_OVERFLOW');
    expect(codeOf(() => w.view('float64', 2))).toBe('E_TABM_OVERFLOW');
    expect(codeOf(() => w.commit({ tokens: 3, dims: [3, 1], dtype: 'float32' }))).toBe('E_TABM_OVERFLOW');
    expect(r.slotState(w.slot)).toBe('ALLOCATED_FOR_WRITE'); // a refused commit leaves the lease usable
    w.commit({ tokens: 5, dims: [5, 1], dtype: 'float16' });
    expect(codeOf(() => w.view('uint8', -1))).toBe('E_TABM_STATE');
    const w2 = await r.acquireWrite();
    expect(codeOf(() => w2.view('uint8', -1))).toBe('E_BAD_OPTION');
    expect(codeOf(() => w2.commit({ tokens: -1, dims: [1] }))).toBe('E_BAD_OPTION');
    expect(codeOf(() => w2.view('constructor' as never, 1))).toBe('E_BAD_OPTION');
    expect(codeOf(() => w2.commit({ tokens: 1, dims: [1], dtype: 'complex' as never }))).toBe('E_BAD_OPTION');
  });
});

describe('views alias the ring memory', () => {
  it('bytes written through a lease view appear in the underlying buffer at the slot offset', async () => {
    const r = ring(3, 16);
    await r.acquireWrite().then((l) => l.abort()); // move past slot 0 so the offset is non-trivial
    const w = await r.acquireWrite();
    expect(w.slot).toBe(1);
    expect(w.byteOffset).toBe(16);
    const f = w.view('float32', 4);
    expect(f.buffer).toBe(r.buffer);
    f.set([1, 2, 3, 4]);
    const raw = new DataView(r.buffer);
    expect([0, 4, 8, 12].map((o) => raw.getFloat32(w.byteOffset + o, true))).toEqual([1, 2, 3, 4]);
    new Uint8Array(r.buffer, w.byteOffset, 2).set([0x00, 0x3c]); // float16 1.0 = 0x3c00, little-endian
    expect(w.view('float16', 1)[0]).toBe(0x3c00);
  });

  it('a worker thread writes into a SharedArrayBuffer slot that the owner then reads', async () => {
    const r = ring(2, 32, true);
    const w = await r.acquireWrite();
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const v = new Float32Array(workerData.buffer, workerData.byteOffset, 8);
      for (let i = 0; i < 8; i++) v[i] = i * 0.5;
      parentPort.postMessage('done');`;
    const worker = new Worker(code, { eval: true, workerData: { buffer: r.buffer, byteOffset: w.byteOffset } });
    await new Promise((res, rej) => { worker.once('message', res); worker.once('error', rej); });
    await worker.terminate();
    w.commit({ tokens: 2, dims: [2, 4], dtype: 'float32' });
    const rd = await r.acquireRead();
    expect(Array.from(rd.view('float32', 8))).toEqual([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
  });
});

describe('back-pressure and ordering', () => {
  it('a write stays pending while all slots are busy, until one is released', async () => {
    const r = ring(2);
    const a = await r.acquireWrite();
    const b = await r.acquireWrite();
    const c = r.acquireWrite();
    expect(await settledState(c)).toBe('pending');
    expect(r.stats().pendingWrites).toBe(1);
    a.commit({ tokens: 1, dims: [1] });
    b.commit({ tokens: 1, dims: [1] });
    expect(await settledState(c)).toBe('pending'); // committed slots are still occupied
    const rd = await r.acquireRead();
    expect(await settledState(c)).toBe('pending'); // and so are slots being read
    rd.release();
    expect(await settledState(c)).toBe('fulfilled');
    expect((await c).slot).toBe(a.slot);
    expect(r.stats().peakOccupied).toBe(2);
  });

  it('waiting writers are served in arrival order and tryAcquireWrite does not overtake them', async () => {
    const r = ring(1);
    const first = await r.acquireWrite();
    const order: string[] = [];
    const p1 = r.acquireWrite().then((l) => { order.push('p1'); return l; });
    const p2 = r.acquireWrite().then((l) => { order.push('p2'); return l; });
    first.abort();
    expect(r.tryAcquireWrite()).toBeUndefined();
    (await p1).abort();
    (await p2).abort();
    expect(order).toEqual(['p1', 'p2']);
  });

  it('reads come out in commit order, not slot order', async () => {
    const r = ring(3);
    const leases = [await r.acquireWrite(), await r.acquireWrite(), await r.acquireWrite()];
    for (const i of [2, 0, 1]) leases[i]!.commit({ tokens: 1, dims: [1], tag: `t${i}` });
    const tags: string[] = [];
    for (let i = 0; i < 3; i++) {
      const rd = await r.acquireRead();
      tags.push(rd.meta.tag!);
      rd.release();
    }
    expect(tags).toEqual(['t2', 't0', 't1']);
  });

  it('50 items through a 3-slot ring arrive intact and in order with a slower consumer', async () => {
    const r = ring(3, slotBytesFor({ tokens: 4, hidden: 8, dtype: 'float32' }));
    const N = 50;
    let sawBackPressure = false;
    const producer = (async () => {
      for (let i = 0; i < N; i++) {
        const w = await r.acquireWrite();
        const tokens = (i % 4) + 1;
        const v = w.view('float32', tokens * 8);
        for (let j = 0; j < v.length; j++) v[j] = i * 1000 + j;
        w.commit({ tokens, dims: [tokens, 8], tag: `item${i}`, dtype: 'float32' });
        if (r.stats().free === 0) sawBackPressure = true;
      }
    })();
    const got: { tag: string; ok: boolean }[] = [];
    for (let i = 0; i < N; i++) {
      const rd: ReadLease = await r.acquireRead();
      for (let k = 0; k < 1 + (i % 3); k++) await tick(); // slower, uneven consumer
      const v = rd.view('float32', rd.meta.tokens * 8);
      got.push({ tag: rd.meta.tag!, ok: v.every((x, j) => x === i * 1000 + j) && rd.meta.tokens === (i % 4) + 1 });
      rd.release();
    }
    await producer;
    expect(got.map((g) => g.tag)).toEqual(Array.from({ length: N }, (_, i) => `item${i}`));
    expect(got.every((g) => g.ok)).toBe(true);
    expect(sawBackPressure).toBe(true);
    expect(r.stats()).toMatchObject({ peakOccupied: 3, committed: 50, released: 50, free: 3 });
  });

  it('a faster consumer waits for a slower producer and still sees every item', async () => {
    const r = ring(3, 8);
    const N = 20;
    const consumer = (async () => {
      const seen: number[] = [];
      for (let i = 0; i < N; i++) {
        const rd = await r.acquireRead();
        seen.push(rd.view('int32', 1)[0]!);
        rd.release();
      }
      return seen;
    })();
    for (let i = 0; i < N; i++) {
      await tick();
      const w: WriteLease = await r.acquireWrite();
      w.view('int32', 1)[0] = i * 7;
      w.commit({ tokens: 1, dims: [1] });
    }
    expect(await consumer).toEqual(Array.from({ length: N }, (_, i) => i * 7));
    expect(r.stats().peakOccupied).toBeLessThanOrEqual(2);
  });
});

describe('abort, timeout and close', () => {
  it('an AbortSignal cancels a pending write and removes it from the queue', async () => {
    const r = ring(1);
    const held = await r.acquireWrite();
    const ac = new AbortController();
    const p = r.acquireWrite({ signal: ac.signal });
    expect(r.stats().pendingWrites).toBe(1);
    ac.abort(new Error('user cancelled'));
    expect(await rejectionCode(p)).toBe('E_TABM_ABORTED');
    expect(r.stats().pendingWrites).toBe(0);
    held.abort(); // the freed slot must not go to the cancelled waiter
    expect(r.stats().free).toBe(1);
  });

  it('an already-aborted signal rejects at once, even when a slot is free', async () => {
    const r = ring(1);
    const ac = new AbortController();
    ac.abort();
    expect(await rejectionCode(r.acquireWrite({ signal: ac.signal }))).toBe('E_TABM_ABORTED');
    expect(await rejectionCode(r.acquireRead({ signal: ac.signal }))).toBe('E_TABM_ABORTED');
    expect(r.stats().free).toBe(1);
  });

  it('aborting after the lease was granted changes nothing', async () => {
    const r = ring(1);
    const ac = new AbortController();
    const w = await r.acquireWrite({ signal: ac.signal });
    ac.abort();
    expect(r.slotState(w.slot)).toBe('ALLOCATED_FOR_WRITE');
    w.commit({ tokens: 1, dims: [1] });
  });

  it('a read times out with E_TABM_TIMEOUT when nothing is committed', async () => {
    const r = ring(1);
    expect(await rejectionCode(r.acquireRead({ timeoutMs: 5 }))).toBe('E_TABM_TIMEOUT');
    expect(r.stats().pendingReads).toBe(0);
  });

  it('a write times out when the ring stays full, and does not time out when served in time', async () => {
    const r = ring(1);
    const held = await r.acquireWrite();
    expect(await rejectionCode(r.acquireWrite({ timeoutMs: 5 }))).toBe('E_TABM_TIMEOUT');
    const p = r.acquireWrite({ timeoutMs: 10_000 });
    held.abort();
    const w = await p; // resolved well before the timeout; its timer was cleared
    expect(r.slotState(w.slot)).toBe('ALLOCATED_FOR_WRITE');
    expect(await rejectionCode(r.acquireWrite({ timeoutMs: -1 }))).toBe('E_BAD_OPTION');
  });

  it('close wakes blocked stages, refuses new writes, and lets committed slots drain', async () => {
    const r = ring(2);
    const reader = r.acquireRead();
    r.close('shutdown');
    expect(await rejectionCode(reader)).toBe('E_TABM_CLOSED');
    expect(await rejectionCode(r.acquireWrite())).toBe('E_TABM_CLOSED');

    const r2 = ring(1);
    const w = await r2.acquireWrite();
    w.commit({ tokens: 1, dims: [1], tag: 'last' });
    const blocked = r2.acquireWrite();
    r2.close();
    expect(await rejectionCode(blocked)).toBe('E_TABM_CLOSED');
    const rd = await r2.acquireRead();
    expect(rd.meta.tag).toBe('last');
    rd.release();
    expect(await rejectionCode(r2.acquireRead())).toBe('E_TABM_CLOSED');
    expect(codeOf(() => r2.tryAcquireWrite())).toBe('E_TABM_CLOSED');
  });
});
