/**
 * The decoder's KV cache between steps: per layer a key and a value tensor [batch, kv_heads, len, head_dim].
 * Two modes, chosen per decoder by bricks.json's `kvCache` (partition/kv-share.ts decides it):
 *
 * - 'concat' (every export): each step the decoder's `present.{i}.*` outputs become the next step's
 *   `past_key_values.{i}.*` feeds as they are (the same tensor objects, no JS-side copy). The graph
 *   appends the new rows with `Concat(past, new)`, which allocates [len + 1] and copies the whole cache
 *   every step, and onnxruntime-node copies each output once more into a fresh ArrayBuffer: O(len) bytes
 *   per layer per token, twice.
 * - 'shared-buffer' (com.microsoft GroupQueryAttention reading the past inputs directly): one buffer per
 *   pair, [1, kv_heads, rows, head_dim], is fed as the past and bound as the preallocated present output
 *   (RunOptions.outputs). GQA sees the same address on both sides (ORT's past_present_share_buffer), writes
 *   only the new rows at seqlens_k = sum(attention_mask) − 1 and reads no further, so the mask alone says
 *   how long the cache is; rows past it are stale and harmless. Truncating for prefix reuse just moves
 *   the length.
 *
 * What the shared buffer does not remove: onnxruntime-node (1.30) copies every fetched output, the
 * preallocated ones included, into a new ArrayBuffer for its return value, which ort-cpu.ts then drops.
 * That copy is as long as the buffer (measured: a 2048-row buffer made decode at a 64-token context 6×
 * slower, scripts/bench-kv.mjs), so the buffers are not allocated at the full context up front: they
 * hold the rows in use rounded up to `growRows` and grow by that step (one head-major copy per step of
 * growth, amortised ~1/growRows of the cache per token), keeping the hidden copy close to the cache in use.
 */
import { fail } from '../../errors.js';
import type { KvCacheMode } from '../../formats/bricks.js';
import type { TensorData, TensorLike } from '../backend.js';
import type { KvLayout } from '../brick-set.js';
import { tensor } from '../feeds.js';

type ArrayCtor = new (n: number) => TensorData;
const ARRAY: Record<string, ArrayCtor> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
};

/** Shared buffers grow by this many rows: a copy of the cache every 64 tokens, at most 63 idle rows. */
const GROW_ROWS = 64;

export interface KvCacheOptions {
  /** Default: the layout's mode. 'shared-buffer' on a decoder whose graph does not allow it is refused. */
  readonly mode?: KvCacheMode;
  /** Most tokens the cache will hold (the session's context); shared buffers never grow past it. Needed for 'shared-buffer'. */
  readonly maxLength?: number;
  /** Shared buffers hold the rows in use rounded up to a multiple of this (default 64, capped at maxLength). */
  readonly growRows?: number;
}

export class KvCache {
  readonly mode: KvCacheMode;
  readonly maxLength: number;
  private past: TensorLike[] = [];
  private len = 0;
  /** Shared mode: rows each buffer holds now; how many times buffers were (re)allocated, for tests and stats. */
  private rows = 0;
  private allocations = 0;
  private readonly growRows: number;

  constructor(readonly layout: KvLayout, opts: KvCacheOptions = {}) {
    if (!ARRAY[layout.dtype]) throw fail('E_UNSUPPORTED', `KV cache dtype '${layout.dtype}' is not supported`);
    this.mode = opts.mode ?? layout.mode;
    if (this.mode === 'shared-buffer' && layout.mode !== 'shared-buffer')
      throw fail('E_BAD_OPTION', 'this decoder\'s KV cache cannot use a shared buffer (bricks.json kvCache is not \'shared-buffer\')',
        { hint: 'only decoders whose attention is GroupQueryAttention reading past_key_values directly can; partition again with this nanomind to detect it' });
    const max = opts.maxLength ?? (this.mode === 'shared-buffer' ? undefined : Number.MAX_SAFE_INTEGER);
    if (!(max !== undefined && Number.isSafeInteger(max) && max >= 1)) throw fail('E_BAD_OPTION', `KV cache maxLength must be an integer ≥ 1, got ${opts.maxLength}`);
    this.maxLength = max;
    const grow = opts.growRows ?? GROW_ROWS;
    if (!(Number.isSafeInteger(grow) && grow >= 1)) throw fail('E_BAD_OPTION', `KV cache growRows must be an integer ≥ 1, got ${grow}`);
    this.growRows = grow;
    this.reset();
  }

  /** Tokens whose keys and values are cached. */
  get length(): number { return this.len; }

  /** Shared mode: rows per buffer now, and how many times the buffers were allocated (first + growths). */
  get buffers(): { readonly rows: number; readonly allocations: number } { return { rows: this.rows, allocations: this.allocations }; }

  reset(): void {
    this.len = 0;
    // Shared mode keeps the buffers it has (their stale rows are never read: GQA stops at seqlens_k);
    // the first step's reserve() allocates them.
    if (this.mode === 'shared-buffer') return;
    const { kvHeads, headDim, dtype, layers } = this.layout;
    const empty = () => tensor(dtype, new ARRAY[dtype]!(0), [1, kvHeads, 0, headDim]);
    this.past = Array.from({ length: 2 * layers }, empty);
  }

  /**
   * Makes room for a step that ends at `length` tokens (shared mode: allocates or grows the buffers;
   * concat mode: nothing to do). Call before `feeds()` / `outputs()`.
   */
  reserve(length: number): void {
    if (!(Number.isSafeInteger(length) && length >= this.len && length <= this.maxLength))
      throw fail('E_CONTEXT_OVERFLOW', `a step to ${length} tokens does not fit the ${this.maxLength}-token KV cache (now ${this.len})`);
    if (this.mode !== 'shared-buffer' || length <= this.rows) return;
    this.allocate(Math.min(Math.ceil(length / this.growRows) * this.growRows, this.maxLength));
  }

  feeds(): Record<string, TensorLike> {
    if (this.mode === 'shared-buffer' && this.rows === 0) throw fail('E_BAD_OPTION', 'KV cache: reserve() the step before feeding a shared buffer');
    const f: Record<string, TensorLike> = {};
    this.layout.past.forEach((p, i) => { f[p.key] = this.past[2 * i]!; f[p.value] = this.past[2 * i + 1]!; });
    return f;
  }

  /** Shared mode: the present outputs to preallocate (the past buffers themselves); concat mode: none. */
  outputs(): Record<string, TensorLike> | undefined {
    if (this.mode !== 'shared-buffer') return undefined;
    const o: Record<string, TensorLike> = {};
    this.layout.present.forEach((p, i) => { o[p.key] = this.past[2 * i]!; o[p.value] = this.past[2 * i + 1]!; });
    return o;
  }

  /**
   * After a decoder run: the cache now holds `length` tokens. Concat mode takes the present outputs as
   * the cache; shared mode checks they are its own buffers (written in place) and moves the length.
   */
  adopt(out: Readonly<Record<string, TensorLike>>, length: number): void {
    const shared = this.mode === 'shared-buffer';
    const next: TensorLike[] = [];
    let k = 0;
    for (const p of this.layout.present)
      for (const name of [p.key, p.value]) {
        const t = out[name];
        const rows = shared ? this.rows : length;
        if (!t || t.dims.length !== 4 || t.dims[2] !== rows || (shared && t.data !== this.past[k]!.data))
          throw fail('E_BRICK_RUN', `decoder output '${name}' should be ${shared ? 'the shared buffer ' : ''}[1, ${this.layout.kvHeads}, ${rows}, ${this.layout.headDim}], got ${t ? `[${t.dims.join(', ')}]` : 'nothing'}`);
        next.push(t);
        k++;
      }
    if (length > (shared ? this.rows : this.maxLength)) throw fail('E_BRICK_RUN', `the decoder ran to ${length} tokens, past the ${shared ? this.rows : this.maxLength}-row KV cache`);
    if (!shared) this.past = next;
    this.len = length;
  }

  /**
   * Keeps the first `n` tokens. Shared mode: only the length moves (the rows after it are overwritten by
   * the next step). Concat mode: the cache is head-major, so a shorter cache is not a prefix of the
   * bytes and each (batch, head) block is copied; once per divergent turn, never per step.
   */
  truncate(n: number): void {
    if (!(Number.isSafeInteger(n) && n >= 0 && n <= this.len)) throw fail('E_BAD_OPTION', `cannot truncate a ${this.len}-token KV cache to ${n}`);
    if (n === this.len) return;
    if (this.mode === 'shared-buffer') { this.len = n; return; }
    if (n === 0) return this.reset();
    this.past = this.past.map((t) => resize(t, n, n));
    this.len = n;
  }

  /** Shared mode: new buffers of `rows`, with the cached rows copied over. */
  private allocate(rows: number): void {
    const { kvHeads, headDim, dtype, layers } = this.layout;
    this.past = this.rows === 0
      ? Array.from({ length: 2 * layers }, () => tensor(dtype, new ARRAY[dtype]!(kvHeads * rows * headDim), [1, kvHeads, rows, headDim]))
      : this.past.map((t) => resize(t, rows, this.len));
    this.rows = rows;
    this.allocations++;
  }
}

/** A [b, h, rows, d] copy of `t` whose first `keep` rows per (batch, head) block are `t`'s. */
function resize(t: TensorLike, rows: number, keep: number): TensorLike {
  const [b, h, T, d] = t.dims as [number, number, number, number];
  const src = t.data as Float32Array;
  const dst = new (src.constructor as new (n: number) => Float32Array)(b * h * rows * d);
  for (let bh = 0; bh < b * h; bh++) dst.set(src.subarray(bh * T * d, bh * T * d + keep * d), bh * rows * d);
  return tensor(t.type, dst, [b, h, rows, d]);
}
