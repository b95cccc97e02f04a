/**
 * A quantized brick set: the same `bricks.json` (format `nanomind.bricks`, version 1) that partition
 * writes, so `readBricksManifest`, partition-style consumers and the runtime read it unchanged. Quantize
 * adds optional fields that older readers ignore:
 *
 * - per brick: `format` (`fp32`, `fp16`, `w8a8`, `w8a16[-gN]`, `w4a16-gN`), `accelerator` (the class the
 *   format targets: `npu`, `gpu`, `cpu`), `quantization` (algorithm, calibration, the float brick it came
 *   from) and `accuracy` (against the float brick on calibration and held-out inputs);
 * - top level: `quantization` (recipe, the source brick set's manifest hash, the report file).
 *
 * A brick without `format` is float as partition wrote it (`fp32`). `readQuantizedManifest` checks the
 * added fields and reports every problem at once; it is the only reader of them.
 */
import { fail } from '../errors.js';
import { BRICKS_FILE, readBricksManifest, type BrickEntry, type BricksManifest } from './bricks.js';

export const ACCELERATOR_CLASSES = ['npu', 'gpu', 'cpu'] as const;
export type AcceleratorClass = (typeof ACCELERATOR_CLASSES)[number];

/** `fp32` `fp16` `w8a8` `w8a16` `w8a16-g128` `w4a16-g32` `w4a16-g128` (group sizes 16..256, powers of two). */
export type BrickFormat = string;
export const FORMAT_PATTERN = /^(fp32|fp16|w8a8|w(4|8)a16(-g(16|32|64|128|256))?)$/;

export interface AccuracyFigures {
  /** Cosine similarity of the brick's primary output with the float brick's, over all samples. */
  readonly cosine: number;
  /** Signal-to-quantization-noise ratio, 10·log10(Σref² / Σ(ref−q)²), in dB. */
  readonly sqnrDb: number;
  readonly maxAbsError: number;
  readonly samples: number;
}

export interface BrickQuantization {
  readonly algorithm: 'none' | 'cast' | 'rtn' | 'awq' | 'qdq-minmax' | 'qdq-percentile' | 'qdq-entropy';
  readonly symmetric?: boolean;
  /** MatMulNBits `accuracy_level` the brick was written with (4 = int8 compute on CPU). */
  readonly accuracyLevel?: number;
  readonly calibration?: { readonly source: 'random' | 'dir'; readonly samples: number; readonly seed: number };
  /** The float brick this one was made from. */
  readonly from: { readonly file: string; readonly sha256: string; readonly bytes: number };
  /** Nodes rewritten, by op (e.g. `{MatMulNBits: 14, GatherBlockQuantized: 1}`). */
  readonly rewritten: Readonly<Record<string, number>>;
}

export interface QuantizedBrickEntry extends BrickEntry {
  readonly format?: BrickFormat;
  readonly accelerator?: AcceleratorClass;
  readonly quantization?: BrickQuantization;
  readonly accuracy?: { readonly calibration: AccuracyFigures; readonly heldOut: AccuracyFigures } | null;
}

export interface QuantizedManifest extends BricksManifest {
  readonly bricks: readonly QuantizedBrickEntry[];
  readonly quantization?: {
    readonly recipe: string;
    readonly source: { readonly dir: string; readonly manifestSha256: string };
    readonly report: string;
  };
}

export const formatOf = (b: QuantizedBrickEntry): BrickFormat => b.format ?? 'fp32';

/** Reads bricks.json with `readBricksManifest`, then checks the quantization fields. */
export async function readQuantizedManifest(dir: string, opts: { checkHashes?: boolean } = {}): Promise<QuantizedManifest> {
  const m = await readBricksManifest(dir, opts) as QuantizedManifest;
  const issues: string[] = [];
  m.bricks.forEach((b, i) => {
    const at = `bricks[${i}]`;
    if (b.format !== undefined && !(typeof b.format === 'string' && FORMAT_PATTERN.test(b.format))) issues.push(`${at}.format: unknown format ${JSON.stringify(b.format)}`);
    if (b.accelerator !== undefined && !ACCELERATOR_CLASSES.includes(b.accelerator)) issues.push(`${at}.accelerator: expected one of ${ACCELERATOR_CLASSES.join(', ')}`);
    if (b.quantization !== undefined) {
      const q = b.quantization as unknown as Record<string, unknown>;
      if (typeof q?.algorithm !== 'string') issues.push(`${at}.quantization.algorithm: expected a string`);
      const from = q?.from as Record<string, unknown> | undefined;
      if (typeof from?.file !== 'string' || typeof from?.sha256 !== 'string') issues.push(`${at}.quantization.from: expected {file, sha256, bytes}`);
    }
    if (b.accuracy) for (const k of ['calibration', 'heldOut'] as const) {
      const a = b.accuracy[k] as unknown as Record<string, unknown> | undefined;
      if (!a || typeof a.cosine !== 'number' || typeof a.sqnrDb !== 'number') issues.push(`${at}.accuracy.${k}: expected {cosine, sqnrDb, maxAbsError, samples}`);
    }
  });
  if (issues.length) throw fail('E_BRICKS_INVALID', `${dir}/${BRICKS_FILE}: ${issues.length} problem(s): ${issues[0]}`, { notes: issues });
  return m;
}
