/**
 * Streaming activation statistics for calibration, memory bounded per tensor whatever the sample count:
 *
 * - range: running min/max (pass 1); with histograms (pass 2, over the pass-1 range) a signed histogram
 *   for two-tailed percentiles and a |x| histogram for the KL (entropy) threshold of TensorRT's int8
 *   calibration (Migacz, "8-bit inference with TensorRT", GTC 2017);
 * - channels (AWQ): per-input-channel mean |x| and mean x² over the last axis, and a reservoir sample
 *   of up to `rows` activation rows (Vitter's algorithm R, seeded).
 */
import { mulberry32 } from '../util/prng.js';

export type CalibMethod = 'minmax' | 'percentile' | 'entropy';
export const CALIB_METHODS: readonly CalibMethod[] = ['minmax', 'percentile', 'entropy'];

const BINS = 2048;

export class RangeStats {
  min = Infinity;
  max = -Infinity;
  private hist?: Float64Array;
  private absHist?: Float64Array;

  observe(x: ArrayLike<number>): void {
    let lo = this.min, hi = this.max;
    for (let i = 0; i < x.length; i++) { const v = x[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    this.min = lo; this.max = hi;
  }

  /** Pass 2: histograms over the range pass 1 found. */
  histogram(x: ArrayLike<number>): void {
    const lo = this.min, hi = this.max;
    const h = (this.hist ??= new Float64Array(BINS));
    const a = (this.absHist ??= new Float64Array(BINS));
    const w = (hi - lo) / BINS || 1;
    const amax = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      h[Math.min(BINS - 1, Math.max(0, Math.floor((v - lo) / w)))]++;
      a[Math.min(BINS - 1, Math.floor((Math.abs(v) / amax) * BINS))]++;
    }
  }

  range(method: CalibMethod, percentile = 99.99): { min: number; max: number } {
    if (!Number.isFinite(this.min)) return { min: 0, max: 0 };
    if (method === 'minmax' || !this.hist) return { min: this.min, max: this.max };
    if (method === 'percentile') {
      const w = (this.max - this.min) / BINS;
      const total = this.hist.reduce((a, b) => a + b, 0);
      const tail = (total * (100 - percentile)) / 100;
      let acc = 0, lo = 0, hi = BINS - 1;
      for (; lo < BINS - 1 && acc + this.hist[lo] <= tail; lo++) acc += this.hist[lo];
      acc = 0;
      for (; hi > lo && acc + this.hist[hi] <= tail; hi--) acc += this.hist[hi];
      return { min: this.min + lo * w, max: this.min + (hi + 1) * w };
    }
    const amax = Math.max(Math.abs(this.min), Math.abs(this.max));
    const t = klThreshold(this.absHist!) * amax;
    return { min: Math.max(this.min, -t), max: Math.min(this.max, t) };
  }
}

/**
 * The clipping threshold (as a fraction of the histogram's range) that minimizes KL(P‖Q) between the
 * |x| distribution clipped at the threshold (outliers folded into the last bin) and its 128-level
 * quantization, searched from 128 bins up.
 */
export function klThreshold(hist: Float64Array, levels = 128): number {
  const n = hist.length;
  let best = n, bestKl = Infinity;
  for (let i = levels; i <= n; i += Math.max(1, Math.floor(n / 512))) {
    const p = Float64Array.from(hist.subarray(0, i));
    for (let j = i; j < n; j++) p[i - 1] += hist[j];
    const q = new Float64Array(i);
    const per = i / levels;
    for (let l = 0; l < levels; l++) {
      const a = Math.floor(l * per), b = Math.floor((l + 1) * per);
      let sum = 0, nz = 0;
      for (let j = a; j < b; j++) { sum += hist[j]; if (hist[j] > 0) nz++; }
      if (l === levels - 1) for (let j = b; j < i; j++) { sum += hist[j]; if (hist[j] > 0) nz++; }
      const end = l === levels - 1 ? i : b;
      for (let j = a; j < end; j++) q[j] = hist[j] > 0 && nz ? sum / nz : 0;
    }
    // Outliers folded into p's last bin are not in q's; q keeps the expanded in-range mass.
    const ps = p.reduce((s, v) => s + v, 0), qs = q.reduce((s, v) => s + v, 0);
    if (!ps || !qs) continue;
    let kl = 0;
    for (let j = 0; j < i; j++) if (p[j] > 0) kl += (p[j] / ps) * Math.log((p[j] / ps) / Math.max(q[j] / qs, 1e-12));
    if (kl < bestKl) { bestKl = kl; best = i; }
  }
  return (best + 0.5) / n;
}

export class ChannelStats {
  absMean?: Float64Array;
  sqMean?: Float64Array;
  rows = 0;
  readonly samples: Float32Array[] = [];
  private seen = 0;
  private readonly rand: () => number;

  constructor(readonly maxRows: number, seed: number) { this.rand = mulberry32(seed); }

  /** `x` holds rows of `K` values (the activation flattened over its leading axes). */
  observe(x: Float32Array, K: number): void {
    const absMean = (this.absMean ??= new Float64Array(K));
    const sqMean = (this.sqMean ??= new Float64Array(K));
    const rows = x.length / K;
    for (let r = 0; r < rows; r++) {
      const row = x.subarray(r * K, (r + 1) * K);
      const n = ++this.rows;
      for (let k = 0; k < K; k++) { const v = row[k]; absMean[k] += (Math.abs(v) - absMean[k]) / n; sqMean[k] += (v * v - sqMean[k]) / n; }
      const seen = this.seen++;
      if (this.samples.length < this.maxRows) this.samples.push(Float32Array.from(row));
      else { const j = Math.floor(this.rand() * (seen + 1)); if (j < this.maxRows) this.samples[j] = Float32Array.from(row); }
    }
  }
}
