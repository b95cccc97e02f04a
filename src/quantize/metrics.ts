/**
 * Accuracy of a quantized brick against its float brick: both run under ONNX Runtime on the same
 * inputs; the primary output (logits for a decoder, else the first output) is compared over all
 * samples at once, in float64: cosine similarity, SQNR (dB) and max abs error.
 */
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import type { AccuracyFigures } from '../formats/quantized.js';
import type { BrickEntry } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';
import { sessionOptions, type Feeds } from './samples.js';

/** SQNR is capped here (bit-exact outputs would be +∞, which JSON cannot hold). */
export const SQNR_CAP_DB = 300;

export class ErrorAccumulator {
  private dot = 0; private refSq = 0; private gotSq = 0; private noise = 0; private maxAbs = 0; private n = 0;

  add(ref: ArrayLike<number>, got: ArrayLike<number>): void {
    if (ref.length !== got.length) { this.maxAbs = Infinity; return; }
    for (let i = 0; i < ref.length; i++) {
      const r = ref[i], g = got[i], d = r - g;
      this.dot += r * g; this.refSq += r * r; this.gotSq += g * g; this.noise += d * d;
      const a = Math.abs(d);
      if (!(a <= this.maxAbs)) this.maxAbs = Number.isNaN(a) ? Infinity : a;
    }
    this.n++;
  }

  result(): AccuracyFigures {
    const cosine = this.refSq && this.gotSq ? this.dot / Math.sqrt(this.refSq * this.gotSq) : (this.refSq === this.gotSq ? 1 : 0);
    const sqnr = this.noise === 0 ? SQNR_CAP_DB : Math.min(SQNR_CAP_DB, 10 * Math.log10(this.refSq / this.noise));
    return { cosine, sqnrDb: Number.isFinite(sqnr) ? sqnr : -SQNR_CAP_DB, maxAbsError: Number.isFinite(this.maxAbs) ? this.maxAbs : Number.MAX_VALUE, samples: this.n };
  }
}

export const primaryOutput = (b: Pick<BrickEntry, 'kind' | 'outputs'>): string =>
  b.kind === 'decoder' && b.outputs.some((o) => o.name === TENSOR.logits) ? TENSOR.logits : b.outputs[0].name;

/** Runs both files on every sample set and compares `output`; one figure per sample set. */
export async function compareBrick(floatFile: string, quantFile: string, output: string, sets: readonly (readonly Feeds[])[],
  threads?: number): Promise<AccuracyFigures[]> {
  const ref = await ort.InferenceSession.create(floatFile, sessionOptions(threads));
  const got = await ort.InferenceSession.create(quantFile, sessionOptions(threads));
  try {
    const out: AccuracyFigures[] = [];
    for (const set of sets) {
      const acc = new ErrorAccumulator();
      for (const feeds of set) {
        const [a, b] = [await ref.run(feeds, [output]), await got.run(feeds, [output])];
        acc.add(a[output].data as Float32Array, b[output].data as Float32Array);
      }
      out.push(acc.result());
    }
    return out;
  } finally {
    await ref.release();
    await got.release();
  }
}
