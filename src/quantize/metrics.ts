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
  return (await compareBricks(floatFile, [quantFile], output, sets, threads))[0]!;
}

/** Several quantized candidates of one float brick on the same sample sets: figures per candidate, per set. */
export async function compareBricks(floatFile: string, quantFiles: readonly string[], output: string, sets: readonly (readonly Feeds[])[],
  threads?: number): Promise<AccuracyFigures[][]> {
  const ref = await ort.InferenceSession.create(floatFile, sessionOptions(threads));
  const got: ort.InferenceSession[] = [];
  try {
    for (const f of quantFiles) got.push(await ort.InferenceSession.create(f, sessionOptions(threads)));
    const out = got.map(() => [] as AccuracyFigures[]);
    for (const set of sets) {
      const acc = got.map(() => new ErrorAccumulator());
      for (const feeds of set) {
        const a = (await ref.run(feeds, [output]))[output].data as Float32Array;
        for (const [k, s] of got.entries()) acc[k]!.add(a, (await s.run(feeds, [output]))[output].data as Float32Array);
      }
      acc.forEach((x, k) => out[k]!.push(x.result()));
    }
    return out;
  } finally {
    await ref.release();
    for (const s of got) await s.release();
  }
}
