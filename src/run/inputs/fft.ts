/**
 * A mixed-radix complex FFT for any length (Whisper's n_fft is 400 = 2⁴·5², not a power of two).
 *
 * Recursive decimation in time, as in KISS FFT: the length is factored (4s first, then 2, 3, 5, and any
 * remaining primes); each level does p sub-transforms of length n/p over strided input, then combines
 * them with one generic radix-p butterfly that folds the twiddle factor and the p-point DFT into a
 * single table lookup, W_n^(stride·k·q). Cost is n·Σp, so lengths with large prime factors degrade
 * toward the direct O(n²) DFT but stay correct. Checked against a direct DFT in test/run/inputs-audio.test.ts.
 */

export class Fft {
  readonly n: number;
  private readonly factors: number[] = [];
  /** remaining[l]: product of the factors after level l (the sub-transform length at level l). */
  private readonly remaining: number[];
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  private readonly scratchRe: Float64Array;
  private readonly scratchIm: Float64Array;

  constructor(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`FFT length must be a positive integer, got ${n}`);
    this.n = n;
    this.cos = new Float64Array(n);
    this.sin = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      this.cos[k] = Math.cos((-2 * Math.PI * k) / n);
      this.sin[k] = Math.sin((-2 * Math.PI * k) / n);
    }
    let m = n;
    for (const p of [4, 2, 3, 5]) while (m % p === 0) { this.factors.push(p); m /= p; }
    for (let p = 7; m > 1; p += 2) while (m % p === 0) { this.factors.push(p); m /= p; }
    this.remaining = this.factors.map((_, l) => this.factors.slice(l + 1).reduce((a, b) => a * b, 1));
    const maxP = Math.max(1, ...this.factors);
    this.scratchRe = new Float64Array(maxP);
    this.scratchIm = new Float64Array(maxP);
  }

  /** Forward transform X[k] = Σ x[j]·e^(−2πi·jk/n); input and output must not overlap. */
  transform(inRe: Float64Array, inIm: Float64Array | null, outRe: Float64Array, outIm: Float64Array): void {
    this.work(outRe, outIm, 0, inRe, inIm, 0, 1, 0);
  }

  private work(
    oRe: Float64Array, oIm: Float64Array, oOff: number,
    iRe: Float64Array, iIm: Float64Array | null, iOff: number, stride: number, level: number,
  ): void {
    const p = this.factors[level];
    if (p === undefined) { // n = 1
      oRe[oOff] = iRe[iOff];
      oIm[oOff] = iIm ? iIm[iOff] : 0;
      return;
    }
    const m = this.remaining[level];
    if (m === 1) {
      for (let q = 0; q < p; q++) {
        oRe[oOff + q] = iRe[iOff + q * stride];
        oIm[oOff + q] = iIm ? iIm[iOff + q * stride] : 0;
      }
    } else {
      for (let q = 0; q < p; q++) this.work(oRe, oIm, oOff + q * m, iRe, iIm, iOff + q * stride, stride * p, level + 1);
    }
    this.butterfly(oRe, oIm, oOff, stride, m, p);
  }

  /** Combines p interleaved sub-transforms of length m (at offsets q·m) into one of length p·m. */
  private butterfly(re: Float64Array, im: Float64Array, off: number, stride: number, m: number, p: number): void {
    const { n, cos, sin, scratchRe: sr, scratchIm: si } = this;
    for (let u = 0; u < m; u++) {
      for (let q = 0; q < p; q++) {
        sr[q] = re[off + u + q * m];
        si[q] = im[off + u + q * m];
      }
      for (let q1 = 0, k = u; q1 < p; q1++, k += m) {
        let accRe = sr[0], accIm = si[0];
        const step = (stride * k) % n;
        for (let q = 1, t = step; q < p; q++, t = (t + step) % n) {
          accRe += sr[q] * cos[t] - si[q] * sin[t];
          accIm += sr[q] * sin[t] + si[q] * cos[t];
        }
        re[off + k] = accRe;
        im[off + k] = accIm;
      }
    }
  }
}
