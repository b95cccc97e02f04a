/**
 * Token-aware buffer manager (TABM, NANOMIND §4): a ring of embedding slots carved out of ONE
 * ArrayBuffer (or SharedArrayBuffer, so a worker thread given `ring.buffer` writes the same bytes),
 * through which one brick hands `[tokens, hidden]` embeddings to the next without copying.
 *
 * Each slot moves FREE → ALLOCATED_FOR_WRITE → READY_TO_READ → ALLOCATED_FOR_READ → FREE.
 * A producer that finds no FREE slot waits (back-pressure), a consumer that finds no READY slot waits,
 * and READY slots are handed out in commit order. The state machine lives on the thread that owns the
 * ring; workers only touch the bytes at a lease's `byteOffset`/`byteLength`.
 *
 * Waiters are served in arrival order and a freed slot goes straight to the first waiter, so a late
 * `tryAcquireWrite` can never overtake a caller that has been waiting.
 */
import { fail } from '../../errors.js';

export type SlotState = 'FREE' | 'ALLOCATED_FOR_WRITE' | 'READY_TO_READ' | 'ALLOCATED_FOR_READ';

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

// Slots start on 8-byte boundaries so every dtype above can be viewed in place, whatever slotBytes is.
const ALIGN = 8;

export interface RingConfig {
  readonly slots: number;
  readonly slotBytes: number;
  /** Back the ring with a SharedArrayBuffer so worker threads can read and write slots. */
  readonly shared?: boolean;
}

export interface SlotMeta {
  readonly tokens: number;
  readonly dims: readonly number[];
  readonly tag?: string;
  /** When given, commit checks that `dims` fit in the slot at this element size. */
  readonly dtype?: SlotDtype;
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
  /** Acquisitions waiting now, and totals since creation. */
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

interface Waiter<L> {
  resolve(lease: L): void;
  reject(err: unknown): void;
}

export class TokenRingBuffer {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
  readonly stride: number;
  private readonly state: SlotState[];
  private readonly meta: (SlotMeta | undefined)[];
  // The lease object that currently owns each slot; a stale lease (committed, released, aborted) no
  // longer matches and so cannot act on a slot that has since been handed to someone else.
  private readonly owner: (object | undefined)[];
  private readonly freeQ: number[];
  private readonly readyQ: number[] = [];
  private readonly writeWaiters: Waiter<WriteLease>[] = [];
  private readonly readWaiters: Waiter<ReadLease>[] = [];
  private peak = 0;
  private committed = 0;
  private released = 0;
  private closedReason: Error | undefined;

  constructor(cfg: RingConfig) {
    if (!isCount(cfg.slots) || !isCount(cfg.slotBytes))
      throw fail('E_TABM_CONFIG', `ring needs positive integer slots and slotBytes, got ${cfg.slots} × ${cfg.slotBytes}`);
    this.slots = cfg.slots;
    this.slotBytes = cfg.slotBytes;
    this.stride = Math.ceil(cfg.slotBytes / ALIGN) * ALIGN;
    const total = this.stride * cfg.slots;
    this.buffer = cfg.shared ? new SharedArrayBuffer(total) : new ArrayBuffer(total);
    this.state = new Array<SlotState>(cfg.slots).fill('FREE');
    this.meta = new Array<SlotMeta | undefined>(cfg.slots).fill(undefined);
    this.owner = new Array<object | undefined>(cfg.slots).fill(undefined);
    this.freeQ = Array.from({ length: cfg.slots }, (_, i) => i);
  }

  slotState(slot: number): SlotState {
    const s = this.state[slot];
    if (s === undefined) throw fail('E_TABM_STATE', `slot ${slot} does not exist (ring has ${this.slots})`);
    return s;
  }

  /** A FREE slot for writing now, or undefined when none is free (or others are already waiting). */
  tryAcquireWrite(): WriteLease | undefined {
    this.checkOpen();
    if (this.writeWaiters.length > 0) return undefined;
    const slot = this.freeQ.shift();
    return slot === undefined ? undefined : this.grantWrite(slot);
  }

  /** Waits while every slot is busy: this is the back-pressure that slows a fast producer. */
  acquireWrite(opts: AcquireOptions = {}): Promise<WriteLease> {
    return this.acquire(this.writeWaiters, () => this.tryAcquireWrite(), opts, 'write');
  }

  /** The oldest committed slot now, or undefined when none is READY (or others are already waiting). */
  tryAcquireRead(): ReadLease | undefined {
    if (this.readWaiters.length > 0) return undefined;
    const slot = this.readyQ.shift();
    if (slot === undefined) {
      this.checkOpen();
      return undefined;
    }
    return this.grantRead(slot);
  }

  /** Waits until a slot is committed; slots come out in the order they were committed. */
  acquireRead(opts: AcquireOptions = {}): Promise<ReadLease> {
    return this.acquire(this.readWaiters, () => this.tryAcquireRead(), opts, 'read');
  }

  /**
   * Wakes every stage blocked on the ring at shutdown: pending and future acquisitions reject with
   * E_TABM_CLOSED, except reads while committed slots remain, so a consumer can drain what was produced.
   * (Readers only ever wait when nothing is READY, so every waiting reader is rejected here.)
   */
  close(reason = 'ring closed'): void {
    if (this.closedReason) return;
    this.closedReason = fail('E_TABM_CLOSED', reason);
    for (const w of this.writeWaiters.splice(0)) w.reject(this.closedReason);
    for (const w of this.readWaiters.splice(0)) w.reject(this.closedReason);
  }

  stats(): RingStats {
    const count = (s: SlotState) => this.state.filter((x) => x === s).length;
    return {
      slots: this.slots, slotBytes: this.slotBytes,
      free: count('FREE'), writing: count('ALLOCATED_FOR_WRITE'), ready: count('READY_TO_READ'),
      reading: count('ALLOCATED_FOR_READ'), peakOccupied: this.peak,
      pendingWrites: this.writeWaiters.length, pendingReads: this.readWaiters.length,
      committed: this.committed, released: this.released,
    };
  }

  private checkOpen(): void {
    if (this.closedReason) throw this.closedReason;
  }

  private acquire<L>(queue: Waiter<L>[], tryNow: () => L | undefined, opts: AcquireOptions, what: string): Promise<L> {
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
      };
      const leave = (err: Error) => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        settle();
        reject(err);
      };
      const onAbort = () => leave(aborted(what, signal!));
      const waiter: Waiter<L> = {
        resolve: (l) => { settle(); resolve(l); },
        reject: (e) => { settle(); reject(e); },
      };
      queue.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined)
        timer = setTimeout(() => leave(fail('E_TABM_TIMEOUT', `no slot to ${what} within ${timeoutMs} ms`)), timeoutMs);
    });
  }

  private occupy(): void {
    const busy = this.slots - this.freeQ.length;
    if (busy > this.peak) this.peak = busy;
  }

  private grantWrite(slot: number): WriteLease {
    this.state[slot] = 'ALLOCATED_FOR_WRITE';
    this.occupy();
    const lease: WriteLease = {
      ...this.region(slot),
      view: (dtype, n) => this.view(slot, lease, 'ALLOCATED_FOR_WRITE', dtype, n),
      commit: (meta) => {
        this.own(slot, lease, 'ALLOCATED_FOR_WRITE', 'commit');
        this.checkMeta(slot, meta);
        this.owner[slot] = undefined;
        this.meta[slot] = Object.freeze({ ...meta, dims: Object.freeze([...meta.dims]) });
        this.state[slot] = 'READY_TO_READ';
        this.committed++;
        const reader = this.readWaiters.shift();
        if (reader) reader.resolve(this.grantRead(slot));
        else this.readyQ.push(slot);
      },
      abort: () => {
        this.own(slot, lease, 'ALLOCATED_FOR_WRITE', 'abort');
        this.toFree(slot);
      },
    };
    this.owner[slot] = lease;
    return lease;
  }

  private grantRead(slot: number): ReadLease {
    this.state[slot] = 'ALLOCATED_FOR_READ';
    const lease: ReadLease = {
      ...this.region(slot),
      meta: this.meta[slot]!,
      view: (dtype, n) => this.view(slot, lease, 'ALLOCATED_FOR_READ', dtype, n),
      release: () => {
        this.own(slot, lease, 'ALLOCATED_FOR_READ', 'release');
        this.released++;
        this.toFree(slot);
      },
    };
    this.owner[slot] = lease;
    return lease;
  }

  private toFree(slot: number): void {
    this.owner[slot] = undefined;
    this.meta[slot] = undefined;
    this.state[slot] = 'FREE';
    const writer = this.writeWaiters.shift();
    if (writer) writer.resolve(this.grantWrite(slot));
    else this.freeQ.push(slot);
  }

  private region(slot: number) {
    return { slot, byteOffset: slot * this.stride, byteLength: this.slotBytes };
  }

  private own(slot: number, lease: object, want: SlotState, action: string): void {
    if (this.owner[slot] !== lease || this.state[slot] !== want)
      throw fail('E_TABM_STATE', `cannot ${action} slot ${slot}: this lease no longer holds it (slot is ${this.state[slot]})`,
        { hint: 'a lease is good for exactly one commit/abort (write) or one release (read)' });
  }

  private view<D extends SlotDtype>(slot: number, lease: object, want: SlotState, dtype: D, n?: number): SlotViewTypes[D] {
    this.own(slot, lease, want, 'view');
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
    if (meta.dtype === undefined) return;
    if (!isDtype(meta.dtype)) throw fail('E_BAD_OPTION', `unknown slot dtype '${meta.dtype}'`);
    const bytes = meta.dims.reduce((a, d) => a * d, 1) * VIEW[meta.dtype].BYTES_PER_ELEMENT;
    if (bytes > this.slotBytes)
      throw fail('E_TABM_OVERFLOW', `slot ${slot}: [${meta.dims.join(', ')}] ${meta.dtype} needs ${bytes} bytes, slot has ${this.slotBytes}`);
  }
}

function aborted(what: string, signal: AbortSignal): Error {
  return fail('E_TABM_ABORTED', `waiting for a slot to ${what} was aborted`, undefined, signal.reason);
}
