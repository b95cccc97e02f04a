import type { Command } from 'commander';
import { fail } from '../errors.js';
import type { QuantizeResult } from '../quantize/index.js';
import type { QuantReport } from '../quantize/report.js';
import { collect, parseNumber } from './flags.js';
import { bytes, emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface QuantizeFlags {
  out: string; recipe: string; brick: string[]; calib?: string; calibMethod: string; algo: string; asymmetric?: boolean;
  accuracyLevel: string; heldOut: string; tokens: string; eval?: string | boolean; sweep?: boolean | string; seed: string; threads?: string;
  compare: boolean; json?: boolean;
}

export const quantizeVerb = (program: Command) => program
  .command('quantize <bricks-dir>')
  .description('quantize each brick to the low-bit format of its accelerator, with measured accuracy')
  .requiredOption('-o, --out <dir>', 'output brick set (written atomically)')
  .option('--recipe <name>', 'hybrid | npu-int8 | cpu-q4 | all-fp16 | fp32', 'hybrid')
  .option('--brick <kind=format>', 'override one brick by kind or name, e.g. decoder=w4a16-g128 (fp32, fp16, w8a8, w8a16[-gN], w4a16-gN)', collect, [])
  .option('--calib <N|DIR>', 'calibration: a folder of images / WAVs (+ prompts.txt) prepared by the model\'s own processor, a question set (eval.jsonl), <input>[.<k>].npy files, or builtin (the embedded model); or N seeded random samples (default: 16; never for w8a8 encoders)')
  .option('--calib-method <m>', 'activation ranges for w8a8: minmax | percentile | entropy', 'minmax')
  .option('--algo <a>', '4-bit weights: auto (AWQ and round-to-nearest, keep whichever is closer to float on the held-out inputs) | awq | rtn', 'auto')
  .option('--no-compare', 'with --algo awq|rtn: do not also quantize 4-bit bricks with the other algorithm for the report')
  .option('--asymmetric', 'blocks with zero points (default: symmetric, llama.cpp Q4_0-compatible)')
  .option('--accuracy-level <n>', 'MatMulNBits accuracy_level: 4 = int8 compute on CPU (fast), 0 = float (exact)', '4')
  .option('--held-out <n>', 'held-out samples for accuracy and end-to-end prompts', '4')
  .option('--tokens <n>', 'greedy tokens per prompt for the end-to-end comparison (0 = skip)', '8')
  .option('--eval <set>', 'eval set for exact-match accuracy: builtin (the embedded model\'s questions), a folder with eval.jsonl as `nanomind eval` reads it, or a .jsonl of {"input_ids", "answer_ids", "inputs"}')
  .option('--no-eval', 'skip every accuracy measurement (fastest; the report has sizes only)')
  .option('--sweep [grid]', 'also score a grid of per-brick precisions, accuracy vs size (writes sweep.json); grid: kind=fmt,fmt;kind=fmt (default: every brick over its usual formats)')
  .option('--seed <n>', 'seed of the random calibration and held-out inputs', '1234')
  .option('--threads <n>', 'ONNX Runtime intra-op threads (default: 2)')
  .option('--json', 'print the report as JSON')
  .action(async (dir: string, f: QuantizeFlags) => {
    const { quantizeBricks } = await import('../quantize/index.js');
    const { parseBrickOverrides, parseSweepGrid } = await import('../quantize/recipes.js');
    const { CALIB_METHODS } = await import('../quantize/stats.js');
    if (!CALIB_METHODS.includes(f.calibMethod as never)) throw fail('E_USAGE', `--calib-method '${f.calibMethod}': expected ${CALIB_METHODS.join(', ')}`);
    if (!['auto', 'awq', 'rtn'].includes(f.algo)) throw fail('E_USAGE', `--algo '${f.algo}': expected auto, awq or rtn`);
    const calib = f.calib === undefined ? undefined : /^\d+$/.test(f.calib) ? parseNumber('--calib', f.calib, { min: 1, integer: true }) : f.calib;
    const progress = stageProgress(undefined, f.json);
    let result: QuantizeResult;
    try {
      result = await quantizeBricks({
        dir, out: f.out, recipe: f.recipe, overrides: parseBrickOverrides(f.brick), calib,
        calibMethod: f.calibMethod as 'minmax', algorithm: f.algo as 'awq', compareAlgorithms: f.compare, symmetric: !f.asymmetric,
        accuracyLevel: parseNumber('--accuracy-level', f.accuracyLevel, { min: 0, max: 4, integer: true }),
        heldOut: parseNumber('--held-out', f.heldOut, { min: 1, integer: true }),
        newTokens: parseNumber('--tokens', f.tokens, { min: 0, integer: true }),
        evaluate: f.eval !== false, evalSet: typeof f.eval === 'string' ? f.eval : undefined, sweep: typeof f.sweep === 'string' ? parseSweepGrid(f.sweep) : f.sweep,
        seed: parseNumber('--seed', f.seed, { integer: true }), threads: parseNumber('--threads', f.threads, { min: 1, integer: true }),
        onStage: (s) => progress.stage(s),
      });
    } finally {
      progress.stop();
    }
    emit(result.report, f.json, renderQuantizeReport);
  });

const fixed = (v: number | null | undefined, d: number) => (v === null || v === undefined ? '-' : v.toFixed(d));
const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${(100 * v).toFixed(1)}%`);

export function renderQuantizeReport(r: QuantReport): string {
  let out = `${r.out}: recipe ${r.recipe}, ${r.bricks.length} brick(s), ${bytes(r.totals.bytesBefore)} → ${bytes(r.totals.bytesAfter)}`
    + ` (${(r.totals.bytesBefore / Math.max(1, r.totals.bytesAfter)).toFixed(2)}× smaller) in ${r.seconds.toFixed(1)} s\n`;
  out += table(['brick', 'kind', 'format', 'runs on', 'bytes', 'after', 'ratio', 'cosine', 'SQNR dB', 'max |err|', 'algorithm'], r.bricks.map((b) => [
    b.name, b.kind, b.format, b.accelerator, bytes(b.bytesBefore), bytes(b.bytesAfter), `${(b.bytesBefore / Math.max(1, b.bytesAfter)).toFixed(2)}×`,
    fixed(b.cosine, 5), fixed(b.sqnrDb, 1), b.maxAbsError === null ? '-' : b.maxAbsError.toExponential(2), b.algorithm,
  ]));
  out += `accuracy: each brick's primary output vs its float brick on ${r.calibration.heldOut} held-out sample(s); calibration: ${r.calibration.samples} ${r.calibration.source} sample(s), seed ${r.calibration.seed}\n`;
  for (const b of r.bricks) {
    if (b.algorithms) out += `  ${b.name}: ${b.algorithms.map((a) => `${a.algorithm} cosine ${a.heldOut.cosine.toFixed(5)}, SQNR ${a.heldOut.sqnrDb.toFixed(2)} dB`).join(' vs ')} (held out)${b.pick ? `: kept ${b.pick.picked}` : ''}\n`;
    if (b.rknn) out += `  ${b.name}: rknn-toolkit2 ${b.rknn.ok ? 'loads it' : `cannot load it: ${b.rknn.problems.join('; ')}`} (opset ${b.rknn.opset})`
      + `${b.rknn.unsupportedOps.length ? `; ${b.rknn.unsupportedOps.join(', ')} are not NPU ops in its op list: those nodes fall back to the CPU or fail, depending on the toolkit version` : ''}\n`;
    for (const n of b.notes) out += `  ${b.name}: note: ${n}\n`;
  }
  const e = r.endToEnd;
  if (e) out += `end to end (${e.generator}, ${e.prompts} prompts × ${e.newTokens} greedy tokens): token agreement ${pct(e.tokenAgreement)}, before first difference ${pct(e.prefixAgreement)}`
    + (e.accuracy !== null ? `; eval set: exact match ${pct(e.accuracy)} (float ${pct(e.floatAccuracy)}), token agreement ${pct(e.evalTokenAgreement)}` : '') + '\n';
  if (r.sweep) {
    const names = Object.keys(r.sweep[0]?.formats ?? {});
    out += `sweep (${r.sweep.length} configurations, * = Pareto front):\n`;
    out += table([...names, 'bytes', 'agreement', 'prefix', 'exact', 'pareto'], r.sweep.map((s) => [
      ...names.map((n) => s.formats[n]), bytes(s.bytes), pct(s.tokenAgreement), pct(s.prefixAgreement), pct(s.accuracy), s.pareto ? '*' : '',
    ]));
  }
  for (const n of r.notes) out += `note: ${n}\n`;
  return out;
}
