/**
 * The decoder's KV cache between steps: per layer a key and a value tensor [batch, kv_heads, len, head_dim].
 *
 * Each step the decoder's `present.{i}.*` outputs become the next step's `past_key_values.{i}.*` feeds
 * as they are: the same tensor objects, no JS-side copy.
 *
 * Where the copies still are, and how they would go away:
 * - The standard exported graph appends the new rows with `Concat(past, new, axis=2)`, which allocates
 *   [len + 1] and copies the whole cache every step (O(len) bytes per layer per token), and the node
 *   binding copies each output once more into a fresh ArrayBuffer. At small contexts this is noise next
 *   to reading the weights; at long contexts it is not.
 * - A decoder exported with com.microsoft `GroupQueryAttention` keeps past and present in one buffer
 *   of max length ([batch, kv_heads, max_len, head_dim], `past_present_share_buffer`): the op writes only
 *   the new token's rows at `seqlens_k`, so binding that one buffer as both the past feed and the
 *   preallocated present output (RunOptions.outputs) would make a step O(1) in cache bytes. That needs
 *   a GQA graph (a compile-stage rewrite), not a runtime change; this class would then hand out views
 *   of its max-length buffers instead of swapping tensors.
 */
import { fail } from '../../errors.js';
import type { TensorData, TensorLike } from '../backend.js';
import type { KvLayout } from '../brick-set.js';
import { tensor } from '../feeds.js';

type ArrayCtor = new (n: number) => TensorData;
const EMPTY: Record<string, ArrayCtor> = {
  float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
};

export class KvCache {
  private past: TensorLike[] = [];
  private len = 0;

  constructor(readonly layout: KvLayout) {
    if (!EMPTY[layout.dtype]) throw fail('E_UNSUPPORTED', `KV cache dtype '${layout.dtype}' is not supported`);
    this.reset();
  }

  /** Tokens whose keys and values are cached. */
  get length(): number { return this.len; }

  reset(): void {
    const { kvHeads, headDim, dtype, layers } = this.layout;
    const empty = () => tensor(dtype, new EMPTY[dtype]!(0), [1, kvHeads, 0, headDim]);
    this.past = Array.from({ length: 2 * layers }, empty);
    this.len = 0;
  }

  feeds(): Record<string, TensorLike> {
    const f: Record<string, TensorLike> = {};
    this.layout.past.forEach((p, i) => { f[p.key] = this.past[2 * i]!; f[p.value] = this.past[2 * i + 1]!; });
    return f;
  }

  /** Takes the decoder's present outputs as the cache, which must now hold `length` tokens. */
  adopt(out: Readonly<Record<string, TensorLike>>, length: number): void {
    const next: TensorLike[] = [];
    for (const p of this.layout.present)
      for (const name of [p.key, p.value]) {
        const t = out[name];
        if (!t || t.dims.length !== 4 || t.dims[2] !== length)
          throw fail('E_BRICK_RUN', `decoder output '${name}' should be [1, ${this.layout.kvHeads}, ${length}, ${this.layout.headDim}], got ${t ? `[${t.dims.join(', ')}]` : 'nothing'}`);
        next.push(t);
      }
    this.past = next;
    this.len = length;
  }

  /**
   * Keeps the first `n` tokens. The cache is head-major, so a shorter cache is not a prefix of the
   * bytes: each (batch, head) block is copied. This happens once per divergent turn, never per step.
   */
  truncate(n: number): void {
    if (!(Number.isSafeInteger(n) && n >= 0 && n <= this.len)) throw fail('E_BAD_OPTION', `cannot truncate a ${this.len}-token KV cache to ${n}`);
    if (n === this.len) return;
    if (n === 0) return this.reset();
    this.past = this.past.map((t) => {
      const [b, h, T, d] = t.dims as [number, number, number, number];
      const src = t.data;
      const dst = new (src.constructor as ArrayCtor)(b * h * n * d);
      for (let bh = 0; bh < b * h; bh++)
        (dst as Float32Array).set((src as Float32Array).subarray(bh * T * d, bh * T * d + n * d), bh * n * d);
      return tensor(t.type, dst, [b, h, n, d]);
    });
    this.len = n;
  }
}
