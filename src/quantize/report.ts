/**
 * `quant-report.json`: what each brick's format cost in accuracy and saved in bytes, end-to-end
 * agreement with the float model, and (with --sweep) the accuracy-vs-size grid.
 */
import type { AccuracyFigures, AcceleratorClass } from '../formats/quantized.js';
import type { BrickKind } from '../formats/names.js';
import type { AwqGroup } from './awq.js';
import type { EndToEnd } from './greedy.js';
import type { RknnCheck } from './rknn-check.js';

export const REPORT_FILE = 'quant-report.json';
export const SWEEP_FILE = 'sweep.json';

export interface AlgorithmComparison {
  readonly algorithm: string;
  /** Held-out figures of the brick quantized with this algorithm. */
  readonly heldOut: AccuracyFigures;
}

/** `--algo auto`: which 4-bit algorithm the brick kept, and the held-out measurement that decided it. */
export interface AlgorithmPick {
  readonly picked: 'awq' | 'rtn';
  readonly metric: 'heldOut.cosine';
  readonly awq: number;
  readonly rtn: number;
}

export interface BrickReport {
  readonly name: string;
  readonly kind: BrickKind;
  readonly format: string;
  readonly accelerator: AcceleratorClass | 'any';
  readonly file: string;
  /** On-disk bytes (.onnx + external data) of the float and the quantized brick. */
  readonly bytesBefore: number;
  readonly bytesAfter: number;
  /** Held-out figures (the headline numbers): the brick's primary output against the float brick's. */
  readonly cosine: number | null;
  readonly sqnrDb: number | null;
  readonly maxAbsError: number | null;
  readonly output: string;
  readonly calibration: AccuracyFigures | null;
  readonly heldOut: AccuracyFigures | null;
  readonly algorithm: string;
  readonly rewritten: Readonly<Record<string, number>>;
  /** RTN vs AWQ on the same held-out inputs (4-bit bricks, when calibration data exists). */
  readonly algorithms?: readonly AlgorithmComparison[];
  readonly pick?: AlgorithmPick;
  readonly awq?: readonly AwqGroup[];
  readonly rknn?: RknnCheck;
  readonly seconds: number;
  readonly notes: readonly string[];
}

export interface SweepEntry {
  readonly formats: Readonly<Record<string, string>>;
  readonly bytes: number;
  readonly tokenAgreement: number | null;
  readonly prefixAgreement: number | null;
  readonly accuracy: number | null;
  /** Held-out cosine of each brick in this configuration. */
  readonly cosine: Readonly<Record<string, number | null>>;
  /** On the accuracy/size Pareto front (no other entry is both smaller and at least as accurate). */
  readonly pareto: boolean;
}

export interface QuantReport {
  readonly format: 'nanomind.quant-report';
  readonly version: 1;
  readonly source: string;
  readonly out: string;
  readonly recipe: string;
  readonly calibration: {
    readonly source: 'random' | 'dir';
    readonly dir?: string;
    readonly samples: number;
    readonly heldOut: number;
    readonly heldOutSource: 'random' | 'dir';
    readonly seed: number;
    readonly method: string;
  };
  readonly settings: { readonly algorithm: string; readonly symmetric: boolean; readonly accuracyLevel: number };
  readonly bricks: readonly BrickReport[];
  readonly totals: { readonly bytesBefore: number; readonly bytesAfter: number };
  readonly endToEnd: (EndToEnd & { readonly generator: string }) | null;
  readonly sweep?: readonly SweepEntry[];
  readonly seconds: number;
  readonly notes: readonly string[];
}

/** Marks the entries no other entry dominates (smaller or equal bytes with better or equal agreement). */
export function markPareto<T extends { bytes: number; tokenAgreement: number | null }>(rows: readonly T[]): (T & { pareto: boolean })[] {
  return rows.map((r) => ({
    ...r,
    pareto: !rows.some((o) => o !== r && o.bytes <= r.bytes && (o.tokenAgreement ?? 0) >= (r.tokenAgreement ?? 0)
      && (o.bytes < r.bytes || (o.tokenAgreement ?? 0) > (r.tokenAgreement ?? 0))),
  }));
}
