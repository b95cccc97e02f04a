/**
 * Token-aware buffer manager (TABM, NANOMIND §4): a ring of embedding slots carved out of ONE
 * ArrayBuffer (or SharedArrayBuffer), through which one brick hands `[tokens, hidden]` embeddings to
 * the next.
 *
 * Each slot moves FREE → ALLOCATED_FOR_WRITE → READY_TO_READ → ALLOCATED_FOR_READ → FREE. The state
 * of every slot is a word in a second buffer (`control`), changed only with `Atomics.compareExchange`,
 * so any thread holding the ring's `handle()` (a worker opens it with `TokenRingBuffer.open`) claims,
 * writes, commits and releases slots itself: no message to the owner per slot. A producer that finds
 * no FREE slot waits (back-pressure), a consumer that finds no READY slot waits; a waiting thread
 * sleeps on the control buffer's epoch word (`Atomics.waitAsync`) and every transition bumps that word
 * and `Atomics.notify`s it. READY slots are handed out in commit order: a commit takes a sequence
 * number, and a reader only claims the slot whose number is next.
 *
 * On one thread, waiters are served in arrival order and a late `tryAcquireWrite` never overtakes a
 * waiting caller; across threads there is no such queue (whichever thread's compareExchange wins).
 */
import { fail } from '../../errors.js';

export type SlotState = 'FREE' | 'ALLOCATED_FOR_WRITE' | 'READY_TO_READ' | 'ALLOCATED_FOR_READ';
const STATES: readonly SlotState[] = ['FREE', 'ALLOCATED_FOR_WRITE', 'READY_TO_READ', 'ALLOCATED_FOR_READ'];
const FREE = 0, WRITING = 1, READY = 2, READING = 3;

/** float16/bfloat16 have no typed array on Node 20: their views are the raw Uint16 bits. */
export type SlotDtype =
  | 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32';

export interface SlotViewTypes {
  float32: Float32Array; float16: Uint16Array; bfloat16: Uint16Array; float64: Float64Array;
  int8: Int8Array; uint8: Uint8Array; int16: Int16Array; uint16: Uint16Array; int32: Int32Array; uint32: Uint32Array;
}

type ViewCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => SlotViewTypes[SlotDtype];

const VIEW: Record<SlotDtype, ViewCtor & { BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, float64: Float64Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
};
const DTYPES = Object.keys(VIEW) as SlotDtype[];

// Slots start on 8-byte boundaries so every dtype above can be viewed in place, whatever slotBytes is.
const ALIGN = 8;

export interface RingConfig {
  readonly slots: number;
  readonly slotBytes: number;
  /** Back the ring (data and state words) with SharedArrayBuffers so worker threads can use it. */
  readonly shared?: boolean;
}

/** What another thread needs to open the same ring (`TokenRingBuffer.open`); structured-clonable. */
export interface RingHandle {
  readonly slots: number;
  readonly slotBytes: number;
  readonly buffer: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
}

/** Most dims and numbers a slot's meta holds, and the longest tag in UTF-8 bytes. */
export const META_MAX_DIMS = 8;
export const META_MAX_NUMBERS = 4;
export const META_MAX_TAG_BYTES = 120;

export interface SlotMeta {
  readonly tokens: number;
  readonly dims: readonly number[];
  readonly tag?: string;
  /** When given, commit checks that `dims` fit in the slot at this element size. */
  readonly dtype?: SlotDtype;
  /** Numbers the producer passes along with the rows (e.g. its timings), at most META_MAX_NUMBERS. */
  readonly numbers?: readonly number[];
}

export interface AcquireOptions {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

interface Lease {
  readonly slot: number;
  readonly byteOffset: number;
  readonly byteLength: number;
  /** A typed array over the slot's bytes (no copy); `elementCount` defaults to the whole slot. */
  view<D extends SlotDtype>(dtype: D, elementCount?: number): SlotViewTypes[D];
}

export interface WriteLease extends Lease {
  commit(meta: SlotMeta): void;
  abort(): void;
}

export interface ReadLease extends Lease {
  readonly meta: SlotMeta;
  release(): void;
}

export interface RingStats {
  readonly slots: number; readonly slotBytes: number;
  /** Slots per state: FREE, ALLOCATED_FOR_WRITE, READY_TO_READ, ALLOCATED_FOR_READ. */
  readonly free: number; readonly writing: number; readonly ready: number; readonly reading: number;
  /** Most slots ever out of FREE at once: what a plan's slot count must cover. */
  readonly peakOccupied: number;
  /** Acquisitions waiting now (every thread), and totals since creation. */
  readonly pendingWrites: number; readonly pendingReads: number; readonly committed: number; readonly released: number;
}

const isDtype = (d: string): d is SlotDtype => Object.hasOwn(VIEW, d);

/** Bytes one slot needs for `[tokens, hidden]` embeddings of `dtype`. */
export function slotBytesFor(a: { tokens: number; hidden: number; dtype: SlotDtype }): number {
  if (!isCount(a.tokens) || !isCount(a.hidden) || !isDtype(a.dtype))
    throw fail('E_TABM_CONFIG', `cannot size a slot for tokens=${a.tokens} hidden=${a.hidden} dtype=${a.dtype}`);
  return a.tokens * a.hidden * VIEW[a.dtype].BYTES_PER_ELEMENT;
}

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n > 0;

// Node 20 has Atomics.waitAsync (V8 ≥ 8.7); the ES2022 lib this project compiles against does not declare it.
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

// Control buffer layout. Int32 words: a header, then per slot [state, commit seq, owner lease id, tag bytes].
const EPOCH = 0, CLOSED = 1, READ_NEXT = 2, COMMIT_NEXT = 3, COMMITTED = 4, RELEASED = 5, PEAK = 6,
  PENDING_W = 7, PENDING_R = 8, LEASE_ID = 9, CURSOR = 10, HEADER = 16, PER_SLOT = 4;
// Then per slot Float64 meta: tokens, ndims, dims…, dtype index (-1: none), count of numbers, numbers…
const META_WORDS = 2 + META_MAX_DIMS + 2 + META_MAX_NUMBERS;

interface Layout { ints: number; metaOffset: number; tagOffset: number; total: number }
function layout(slots: number): Layout {
  const ints = HEADER + slots * PER_SLOT;
  const metaOffset = Math.ceil((ints * 4) / 8) * 8;
  const tagOffset = metaOffset + slots * META_WORDS * 8;
  return { ints, metaOffset, tagOffset, total: tagOffset + slots * META_MAX_TAG_BYTES };
}

interface Waiter<L> {
  resolve(lease: L): void;
  reject(err: unknown): void;
}

export class TokenRingBuffer {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** The state words; a SharedArrayBuffer when the ring is shared. */
  readonly control: ArrayBuffer | SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
  readonly stride: number;
  private readonly w: Int32Array;
  private readonly metaWords: Float64Array;
  private readonly tags: Uint8Array;
  private readonly writeWaiters: Waiter<WriteLease>[] = [];
  private readonly readWaiters: Waiter<ReadLease>[] = [];
  private closedReason: Error | undefined;
  private sleeping = false;
  private keepAlive: ReturnType<typeof setInterval> | undefined;

  constructor(cfg: RingConfig, existing?: { buffer: SharedArrayBuffer; control: SharedArrayBuffer }) {
    if (!isCount(cfg.slots) || !isCount(cfg.slotBytes))
      throw fail('E_TABM_CONFIG', `ring needs positive integer slots and slotBytes, got ${cfg.slots} × ${cfg.slotBytes}`);
    this.slots = cfg.slots;
    this.slotBytes = cfg.slotBytes;
    this.stride = Math.ceil(cfg.slotBytes / ALIGN) * ALIGN;
    const total = this.stride * cfg.slots;
    const lay = layout(cfg.slots);
    if (existing) {
      if (existing.buffer.byteLength !== total || existing.control.byteLength !== lay.total)
        throw fail('E_TABM_CONFIG', `ring handle does not match ${cfg.slots} × ${cfg.slotBytes}-byte slots`);
      this.buffer = existing.buffer;
      this.control = existing.control;
    } else {
      this.buffer = cfg.shared ? new SharedArrayBuffer(total) : new ArrayBuffer(total);
      this.control = cfg.shared ? new SharedArrayBuffer(lay.total) : new ArrayBuffer(lay.total);
    }
    this.w = new Int32Array(this.control, 0, lay.ints);
    this.metaWords = new Float64Array(this.control, lay.metaOffset, cfg.slots * META_WORDS);
    this.tags = new Uint8Array(this.control, lay.tagOffset, cfg.slots * META_MAX_TAG_BYTES);
  }

  /** Another thread's view of a shared ring: same slots, same state words. */
  static open(h: RingHandle): TokenRingBuffer {
    return new TokenRingBuffer({ slots: h.slots, slotBytes: h.slotBytes, shared: true }, { buffer: h.buffer, control: h.control });
  }

  /** What to send to a worker so it can `open` this ring. */
  handle(): RingHandle {
    if (!(this.buffer instanceof SharedArrayBuffer) || !(this.control instanceof SharedArrayBuffer))
      throw fail('E_TABM_CONFIG', 'only a shared ring ({ shared: true }) can be opened by another thread');
    return { slots: this.slots, slotBytes: this.slotBytes, buffer: this.buffer, control: this.control };
  }

  get shared(): boolean { return this.control instanceof SharedArrayBuffer; }

  slotState(slot: number): SlotState {
    if (!Number.isSafeInteger(slot) || slot < 0 || slot >= this.slots)
      throw fail('E_TABM_STATE', `slot ${slot} does not exist (ring has ${this.slots})`);
    return STATES[Atomics.load(this.w, this.word(slot, 0))]!;
  }

  /** A FREE slot for writing now, or undefined when none is free (or others on this thread are already waiting). */
  tryAcquireWrite(): WriteLease | undefined {
    this.checkOpen();
    if (this.writeWaiters.length > 0) return undefined;
    return this.claimWrite();
  }

  /** Waits while every slot is busy: this is the back-pressure that slows a fast producer. */
  acquireWrite(opts: AcquireOptions = {}): Promise<WriteLease> {
    return this.acquire(this.writeWaiters, PENDING_W, () => this.tryAcquireWrite(), opts, 'write');
  }

  /** The oldest committed slot now, or undefined when none is READY (or others on this thread are already waiting). */
  tryAcquireRead(): ReadLease | undefined {
    if (this.readWaiters.length > 0) return undefined;
    const l = this.claimRead();
    if (!l) this.checkOpen();
    return l;
  }

  /** Waits until a slot is committed; slots come out in the order they were committed. */
  acquireRead(opts: AcquireOptions = {}): Promise<ReadLease> {
    return this.acquire(this.readWaiters, PENDING_R, () => this.tryAcquireRead(), opts, 'read');
  }

  /**
   * Wakes every stage blocked on the ring (on every thread) at shutdown: pending and future
   * acquisitions reject with E_TABM_CLOSED, except reads while committed slots remain, so a consumer
   * can drain what was produced. Leases already held still commit, abort and release.
   */
  close(reason = 'ring closed'): void {
    if (this.closedReason) return;
    this.closedReason = fail('E_TABM_CLOSED', reason);
    Atomics.store(this.w, CLOSED, 1);
    this.changed();
  }

  get closed(): boolean { return this.closedReason !== undefined || Atomics.load(this.w, CLOSED) === 1; }

  stats(): RingStats {
    const n = [0, 0, 0, 0];
    for (let s = 0; s < this.slots; s++) n[Atomics.load(this.w, this.word(s, 0))]!++;
    return {
      slots: this.slots, slotBytes: this.slotBytes,
      free: n[FREE]!, writing: n[WRITING]!, ready: n[READY]!, reading: n[READING]!,
      peakOccupied: Atomics.load(this.w, PEAK),
      pendingWrites: Atomics.load(this.w, PENDING_W), pendingReads: Atomics.load(this.w, PENDING_R),
      committed: Atomics.load(this.w, COMMITTED), released: Atomics.load(this.w, RELEASED),
    };
  }

  private word(slot: number, field: number): number { return HEADER + slot * PER_SLOT + field; }

  private checkOpen(): void {
    if (this.closedReason) throw this.closedReason;
    if (Atomics.load(this.w, CLOSED) === 1) throw (this.closedReason = fail('E_TABM_CLOSED', 'ring closed by another thread'));
  }

  /** Every transition: bump the epoch and wake sleepers on other threads, then serve this thread's waiters. */
  private changed(): void {
    Atomics.add(this.w, EPOCH, 1);
    if (this.shared) Atomics.notify(this.w, EPOCH);
    this.serve();
  }

  /** Hands slots to this thread's waiters in arrival order; sleeps on the epoch word while some still wait. */
  private serve(): void {
    const seen = Atomics.load(this.w, EPOCH);
    while (this.writeWaiters.length) {
      const l = this.claimWrite();
      if (!l) break;
      this.writeWaiters.shift()!.resolve(l);
    }
    while (this.readWaiters.length) {
      const l = this.claimRead();
      if (!l) break;
      this.readWaiters.shift()!.resolve(l);
    }
    this.letGoIfIdle();
    if (this.closed) {
      const err = this.closedReason ?? (this.closedReason = fail('E_TABM_CLOSED', 'ring closed by another thread'));
      for (const q of [this.writeWaiters, this.readWaiters] as Waiter<unknown>[][]) for (const x of q.splice(0)) x.reject(err);
      this.letGoIfIdle();
      return;
    }
    if (!this.shared || this.sleeping || (!this.writeWaiters.length && !this.readWaiters.length)) return;
    // Another thread's transition bumps the epoch: 'not-equal' (it already did) or a wake-up both re-serve.
    const r = waitAsync(this.w, EPOCH, seen);
    if (!r.async) { queueMicrotask(() => this.serve()); return; }
    this.sleeping = true;
    // A pending waitAsync does not keep Node's event loop alive: without this timer a thread whose only
    // work is waiting for a slot would exit instead of waking.
    this.keepAlive ??= setInterval(() => undefined, 2 ** 30);
    void r.value.then(() => { this.sleeping = false; this.serve(); });
  }

  /** Nobody on this thread waits: the keep-alive timer goes (a left-over waitAsync then holds nothing). */
  private letGoIfIdle(): void {
    if (this.writeWaiters.length || this.readWaiters.length || this.keepAlive === undefined) return;
    clearInterval(this.keepAlive);
    this.keepAlive = undefined;
  }

  private acquire<L>(queue: Waiter<L>[], pendingWord: number, tryNow: () => L | undefined, opts: AcquireOptions, what: string): Promise<L> {
    const { signal, timeoutMs } = opts;
    if (timeoutMs !== undefined && !(timeoutMs >= 0))
      return Promise.reject(fail('E_BAD_OPTION', `timeoutMs must be ≥ 0, got ${timeoutMs}`));
    if (signal?.aborted) return Promise.reject(aborted(what, signal));
    let now: L | undefined;
    try {
      now = tryNow();
    } catch (e) {
      return Promise.reject(e);
    }
    if (now !== undefined) return Promise.resolve(now);
    return new Promise<L>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const settle = () => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        Atomics.sub(this.w, pendingWord, 1);
      };
      const leave = (err: Error) => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        settle();
        this.letGoIfIdle();
        reject(err);
      };
      const onAbort = () => leave(aborted(what, signal!));
      const waiter: Waiter<L> = {
        resolve: (l) => { settle(); resolve(l); },
        reject: (e) => { settle(); reject(e); },
      };
      queue.push(waiter);
      Atomics.add(this.w, pendingWord, 1);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined)
        timer = setTimeout(() => leave(fail('E_TABM_TIMEOUT', `no slot to ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.serve();
    });
  }

  /** compareExchange FREE → ALLOCATED_FOR_WRITE on the first FREE slot from the cursor (so slots are used round-robin). */
  private claimWrite(): WriteLease | undefined {
    const start = Atomics.load(this.w, CURSOR);
    for (let k = 0; k < this.slots; k++) {
      const slot = (start + k) % this.slots;
      if (Atomics.compareExchange(this.w, this.word(slot, 0), FREE, WRITING) !== FREE) continue;
      Atomics.store(this.w, CURSOR, (slot + 1) % this.slots);
      const id = this.own(slot);
      this.notePeak();
      return this.writeLease(slot, id);
    }
    return undefined;
  }

  /** compareExchange READY_TO_READ → ALLOCATED_FOR_READ on the slot whose commit number is next. */
  private claimRead(): ReadLease | undefined {
    for (;;) {
      const next = Atomics.load(this.w, READ_NEXT);
      let slot = -1;
      for (let s = 0; s < this.slots; s++)
        if (Atomics.load(this.w, this.word(s, 0)) === READY && Atomics.load(this.w, this.word(s, 1)) === next) { slot = s; break; }
      if (slot < 0) return undefined;
      if (Atomics.compareExchange(this.w, this.word(slot, 0), READY, READING) !== READY) continue; // another thread won it
      Atomics.add(this.w, READ_NEXT, 1);
      const id = this.own(slot);
      return this.readLease(slot, id);
    }
  }

  private own(slot: number): number {
    const id = Atomics.add(this.w, LEASE_ID, 1) + 1;
    Atomics.store(this.w, this.word(slot, 2), id);
    return id;
  }

  private notePeak(): void {
    let busy = 0;
    for (let s = 0; s < this.slots; s++) if (Atomics.load(this.w, this.word(s, 0)) !== FREE) busy++;
    for (let p = Atomics.load(this.w, PEAK); busy > p; p = Atomics.load(this.w, PEAK))
      if (Atomics.compareExchange(this.w, PEAK, p, busy) === p) break;
  }

  private writeLease(slot: number, id: number): WriteLease {
    return {
      ...this.region(slot),
      view: (dtype, n) => this.view(slot, id, WRITING, dtype, n),
      commit: (meta) => {
        this.check(slot, id, WRITING, 'commit');
        this.checkMeta(slot, meta);
        this.writeMeta(slot, meta);
        Atomics.store(this.w, this.word(slot, 1), Atomics.add(this.w, COMMIT_NEXT, 1));
        Atomics.store(this.w, this.word(slot, 2), 0);
        Atomics.add(this.w, COMMITTED, 1);
        // The meta and the rows are written before this store: a reader that sees READY sees them.
        Atomics.store(this.w, this.word(slot, 0), READY);
        this.changed();
      },
      abort: () => {
        this.check(slot, id, WRITING, 'abort');
        this.toFree(slot);
      },
    };
  }

  private readLease(slot: number, id: number): ReadLease {
    return {
      ...this.region(slot),
      meta: this.readMeta(slot),
      view: (dtype, n) => this.view(slot, id, READING, dtype, n),
      release: () => {
        this.check(slot, id, READING, 'release');
        Atomics.add(this.w, RELEASED, 1);
        this.toFree(slot);
      },
    };
  }

  private toFree(slot: number): void {
    Atomics.store(this.w, this.word(slot, 2), 0);
    Atomics.store(this.w, this.word(slot, 0), FREE);
    this.changed();
  }

  private region(slot: number) {
    return { slot, byteOffset: slot * this.stride, byteLength: this.slotBytes };
  }

  private check(slot: number, id: number, want: number, action: string): void {
    const state = Atomics.load(this.w, this.word(slot, 0));
    if (Atomics.load(this.w, this.word(slot, 2)) !== id || state !== want)
      throw fail('E_TABM_STATE', `cannot ${action} slot ${slot}: this lease no longer holds it (slot is ${STATES[state]})`,
        { hint: 'a lease is good for exactly one commit/abort (write) or one release (read)' });
  }

  private view<D extends SlotDtype>(slot: number, id: number, want: number, dtype: D, n?: number): SlotViewTypes[D] {
    this.check(slot, id, want, 'view');
    if (!isDtype(dtype)) throw fail('E_BAD_OPTION', `unknown slot dtype '${dtype}'`);
    const ctor = VIEW[dtype];
    const count = n ?? Math.floor(this.slotBytes / ctor.BYTES_PER_ELEMENT);
    if (!Number.isSafeInteger(count) || count < 0) throw fail('E_BAD_OPTION', `element count must be ≥ 0, got ${n}`);
    const bytes = count * ctor.BYTES_PER_ELEMENT;
    if (bytes > this.slotBytes)
      throw fail('E_TABM_OVERFLOW', `${count} × ${dtype} = ${bytes} bytes does not fit a ${this.slotBytes}-byte slot`,
        { hint: 'size slots with slotBytesFor({tokens, hidden, dtype}) for the largest chunk' });
    return new ctor(this.buffer, slot * this.stride, count) as SlotViewTypes[D];
  }

  private checkMeta(slot: number, meta: SlotMeta): void {
    if (!Number.isSafeInteger(meta.tokens) || meta.tokens < 0 || !meta.dims.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw fail('E_BAD_OPTION', `slot ${slot}: bad meta tokens=${meta.tokens} dims=[${meta.dims.join(', ')}]`);
    if (meta.dims.length > META_MAX_DIMS || (meta.numbers?.length ?? 0) > META_MAX_NUMBERS
      || new TextEncoder().encode(meta.tag ?? '').length > META_MAX_TAG_BYTES)
      throw fail('E_BAD_OPTION', `slot ${slot}: meta holds at most ${META_MAX_DIMS} dims, ${META_MAX_NUMBERS} numbers and a ${META_MAX_TAG_BYTES}-byte tag`);
    if (meta.dtype === undefined) return;
    if (!isDtype(meta.dtype)) throw fail('E_BAD_OPTION', `unknown slot dtype '${meta.dtype}'`);
    const bytes = meta.dims.reduce((a, d) => a * d, 1) * VIEW[meta.dtype].BYTES_PER_ELEMENT;
    if (bytes > this.slotBytes)
      throw fail('E_TABM_OVERFLOW', `slot ${slot}: [${meta.dims.join(', ')}] ${meta.dtype} needs ${bytes} bytes, slot has ${this.slotBytes}`);
  }

  // Meta crosses threads through the control buffer, so a reader on another thread sees what was committed.
  private writeMeta(slot: number, meta: SlotMeta): void {
    const m = this.metaWords.subarray(slot * META_WORDS, (slot + 1) * META_WORDS);
    m.fill(0);
    m[0] = meta.tokens;
    m[1] = meta.dims.length;
    meta.dims.forEach((d, i) => { m[2 + i] = d; });
    m[2 + META_MAX_DIMS] = meta.dtype === undefined ? -1 : DTYPES.indexOf(meta.dtype);
    m[3 + META_MAX_DIMS] = meta.numbers?.length ?? 0;
    meta.numbers?.forEach((x, i) => { m[4 + META_MAX_DIMS + i] = x; });
    const tag = meta.tag === undefined ? undefined : new TextEncoder().encode(meta.tag);
    this.tags.set(tag ?? [], slot * META_MAX_TAG_BYTES);
    Atomics.store(this.w, this.word(slot, 3), tag ? tag.length : -1);
  }

  private readMeta(slot: number): SlotMeta {
    const m = this.metaWords.subarray(slot * META_WORDS, (slot + 1) * META_WORDS);
    const dtypeIdx = m[2 + META_MAX_DIMS]!;
    const nNumbers = m[3 + META_MAX_DIMS]!;
    const tagLen = Atomics.load(this.w, this.word(slot, 3));
    const meta: { -readonly [K in keyof SlotMeta]: SlotMeta[K] } = {
      tokens: m[0]!, dims: Object.freeze(Array.from(m.subarray(2, 2 + m[1]!))),
    };
    if (tagLen >= 0) meta.tag = new TextDecoder().decode(this.tags.slice(slot * META_MAX_TAG_BYTES, slot * META_MAX_TAG_BYTES + tagLen));
    if (dtypeIdx >= 0) meta.dtype = DTYPES[dtypeIdx];
    if (nNumbers > 0) meta.numbers = Object.freeze(Array.from(m.subarray(4 + META_MAX_DIMS, 4 + META_MAX_DIMS + nNumbers)));
    return Object.freeze(meta);
  }
}

function aborted(what: string, signal: AbortSignal): Error {
  return fail('E_TABM_ABORTED', `waiting for a slot to ${what} was aborted`, undefined, signal.reason);
}
