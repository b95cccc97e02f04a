/**
 * Incremental text for streaming and stop strings, given the caller's `decode(ids)`.
 *
 * Decoding the whole generated sequence each step (not token by token) is what keeps multi-byte
 * characters split across byte-level BPE tokens intact; a trailing U+FFFD means "incomplete" and is
 * held back. Text that could still grow into a stop string is held back too, so a stop string never
 * leaks into the stream.
 */
export class TextStream {
  private text = '';
  private emitted = 0;
  private readonly maxStop: number;

  constructor(private readonly decode: (ids: readonly number[]) => string, private readonly stopStrings: readonly string[] = []) {
    this.maxStop = Math.max(0, ...stopStrings.map((s) => s.length));
  }

  /** Feeds the full generated id list; returns the new text safe to show and, when hit, where a stop string starts. */
  push(ids: readonly number[]): { delta: string; stopAt?: number } {
    const prev = this.text.length;
    this.text = this.decode(ids);
    let stopAt: number | undefined;
    for (const s of this.stopStrings) {
      const at = this.text.indexOf(s, Math.max(0, prev - s.length));
      if (at >= 0 && (stopAt === undefined || at < stopAt)) stopAt = at;
    }
    if (stopAt !== undefined) return { delta: this.take(stopAt), stopAt };
    let end = this.text.length;
    while (end > this.emitted && this.text.charCodeAt(end - 1) === 0xfffd) end--;
    end -= this.pendingStopPrefix(end);
    return { delta: this.take(end) };
  }

  /** Everything not yet emitted, up to `end` (the stop string's start when one was hit). */
  finish(end = this.text.length): { delta: string; text: string } {
    return { delta: this.take(end), text: this.text.slice(0, end) };
  }

  private take(end: number): string {
    if (end <= this.emitted) return '';
    const d = this.text.slice(this.emitted, end);
    this.emitted = end;
    return d;
  }

  /** Length of the longest tail of text[..end) that is a proper prefix of a stop string. */
  private pendingStopPrefix(end: number): number {
    for (let k = Math.min(this.maxStop - 1, end - this.emitted); k > 0; k--) {
      const tail = this.text.slice(end - k, end);
      if (this.stopStrings.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  }
}
