/**
 * An immutable set of graph-input indices, as a bitset of 32-bit words: the dataflow answer to "which
 * graph inputs does this value depend on". Any number of inputs (a with-KV export of 24 layers has 50+),
 * where a single `number` mask stops at 32.
 */
export class InputSet {
  private constructor(private readonly words: Uint32Array) {}

  static readonly EMPTY = new InputSet(new Uint32Array(0));

  static of(...indices: readonly number[]): InputSet {
    if (!indices.length) return InputSet.EMPTY;
    const words = new Uint32Array((Math.max(...indices) >> 5) + 1);
    for (const i of indices) {
      if (!Number.isInteger(i) || i < 0) throw new RangeError(`input index ${i}`);
      words[i >> 5] |= 1 << (i & 31);
    }
    return new InputSet(words);
  }

  has(i: number): boolean {
    return i >= 0 && (i >> 5) < this.words.length && ((this.words[i >> 5] >>> (i & 31)) & 1) === 1;
  }

  isEmpty(): boolean {
    return this.words.every((w) => w === 0);
  }

  /** The union; returns `this` (no allocation) when `other` adds nothing. */
  union(other: InputSet): InputSet {
    if (other.isSubsetOf(this)) return this;
    if (this.isSubsetOf(other)) return other;
    const n = Math.max(this.words.length, other.words.length);
    const words = new Uint32Array(n);
    for (let k = 0; k < n; k++) words[k] = (this.words[k] ?? 0) | (other.words[k] ?? 0);
    return new InputSet(words);
  }

  intersects(other: InputSet): boolean {
    const n = Math.min(this.words.length, other.words.length);
    for (let k = 0; k < n; k++) if ((this.words[k] & other.words[k]) !== 0) return true;
    return false;
  }

  isSubsetOf(other: InputSet): boolean {
    for (let k = 0; k < this.words.length; k++) if ((this.words[k] & ~(other.words[k] ?? 0)) !== 0) return false;
    return true;
  }

  /** Same members (trailing zero words do not matter). */
  equals(other: InputSet): boolean {
    return this === other || (this.isSubsetOf(other) && other.isSubsetOf(this));
  }

  /** Member indices, ascending. */
  indices(): number[] {
    const out: number[] = [];
    this.words.forEach((w, k) => { for (let b = 0; b < 32; b++) if ((w >>> b) & 1) out.push(k * 32 + b); });
    return out;
  }
}
