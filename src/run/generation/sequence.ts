/**
 * The token sequence of one conversation and the memory the decoder reads it from, allocated once
 * at `capacity` (the max context) so no step allocates:
 * - `embeds`: [capacity, hidden] float32, row i = the embedding fed at position i. The embed brick
 *   writes its rows here (preallocated output), encoder feature rows are copied in once, and the
 *   decoder reads a view of rows [from, to). It also remembers what was fed, which is how prefix reuse
 *   tells an unchanged image from a new one behind the same placeholder tokens.
 * - `ids`, `mask`, `positions`: int64 rows for input_ids / attention_mask / position_ids views.
 *
 * Position ids follow HF / transformers.js for left padding: cumsum(mask) - 1, and 1 where mask is 0.
 */
import { fail } from '../../errors.js';

export class Sequence {
  readonly embeds: Float32Array | undefined;
  readonly ids: BigInt64Array;
  readonly mask: BigInt64Array;
  readonly positions: BigInt64Array;
  private readonly toks: number[] = [];
  private ones = 0;

  /** `positionStart`: added to cumsum(mask) − 1 (1 for families whose exports count from 1). */
  constructor(readonly capacity: number, readonly hidden: number | undefined, readonly positionStart = 0) {
    if (!(Number.isSafeInteger(capacity) && capacity > 0)) throw fail('E_BAD_OPTION', `maxContext must be a positive integer, got ${capacity}`);
    this.embeds = hidden ? new Float32Array(capacity * hidden) : undefined;
    this.ids = new BigInt64Array(capacity);
    this.mask = new BigInt64Array(capacity);
    this.positions = new BigInt64Array(capacity);
  }

  get length(): number { return this.toks.length; }
  get tokens(): readonly number[] { return this.toks; }
  maskAt(i: number): number { return Number(this.mask[i]); }

  append(tokens: readonly number[], mask?: readonly number[]): void {
    if (this.toks.length + tokens.length > this.capacity)
      throw fail('E_CONTEXT_OVERFLOW', `${this.toks.length + tokens.length} tokens do not fit the ${this.capacity}-token context`,
        { hint: 'raise maxContext, shorten the conversation, or start a new session' });
    tokens.forEach((t, k) => {
      const i = this.toks.length;
      const m = mask ? mask[k]! : 1;
      this.toks.push(t);
      this.ids[i] = BigInt(t);
      this.mask[i] = BigInt(m);
      this.ones += m;
      this.positions[i] = m ? BigInt(this.ones - 1 + this.positionStart) : 1n;
    });
  }

  truncate(n: number): void {
    this.toks.length = Math.min(n, this.toks.length);
    this.ones = 0;
    for (let i = 0; i < this.toks.length; i++) this.ones += Number(this.mask[i]);
  }

  /** Rows [from, to) of the embedding arena (a view, no copy). */
  rows(from: number, to: number): Float32Array {
    if (!this.embeds || !this.hidden) throw fail('E_BRICKS_ROLE', 'this decoder takes input_ids; there is no embedding arena');
    return this.embeds.subarray(from * this.hidden, to * this.hidden);
  }
}
