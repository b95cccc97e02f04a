/**
 * The simulator against the machine: plan.json's per-stage predictions (compile's cost model, fed by
 * `bench --calibrate` on the host target) beside what `bench` measures for the plan's own reference
 * request (same prompt tokens, images, output tokens). A row is within when measured/predicted − 1 is
 * inside ±tolerance (default 25 %).
 */
import type { Plan } from '../formats/bundle.js';
import type { BenchResult } from './bench.js';

export interface PlanCheckRow {
  readonly what: 'encode ms' | 'prefill tok/s' | 'decode tok/s' | 'latency ms';
  readonly predicted: number;
  readonly measured: number;
  /** measured / predicted. */
  readonly ratio: number;
  readonly within: boolean;
}

export interface PlanCheck {
  readonly target: string;
  readonly tolerance: number;
  readonly rows: readonly PlanCheckRow[];
  readonly allWithin: boolean;
}

export function planVsMeasured(plan: Plan, b: BenchResult, tolerance = 0.25): PlanCheck {
  const sum = (phase: string) => plan.stages.filter((s) => s.phase === phase).reduce((n, s) => n + s.predicted.ms, 0);
  const imageRows = plan.ringBuffers.filter((r) => r.to.length > 0).reduce((n, r) => n + r.tokens, 0) * plan.workload.images;
  const prompt = plan.workload.promptTokens + imageRows;
  const pairs: [PlanCheckRow['what'], number, number | undefined][] = [
    ['encode ms', sum('encode') * plan.workload.images, b.encodeMs?.median],
    ['prefill tok/s', prompt / (sum('prefill') / 1000), b.prefillTokPerS.median],
    ['decode tok/s', 1000 / sum('decode'), b.decodeTokPerS.median],
    ['latency ms', plan.predicted.latencyMs, b.totalMs.median],
  ];
  const rows = pairs.flatMap(([what, predicted, measured]) => {
    if (measured === undefined || !(predicted > 0) || !Number.isFinite(predicted)) return [];
    const ratio = measured / predicted;
    return [{ what, predicted, measured, ratio, within: Math.abs(ratio - 1) <= tolerance }];
  });
  return { target: plan.target, tolerance, rows, allWithin: rows.every((r) => r.within) };
}

export function renderPlanCheck(c: PlanCheck): string {
  const f = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3));
  const lines = [`plan.json (target ${c.target}, model-based estimate) vs measured here, ±${Math.round(c.tolerance * 100)} %:`,
    `${'what'.padEnd(14)} ${'predicted'.padStart(10)} ${'measured'.padStart(10)} ${'ratio'.padStart(6)}`];
  for (const r of c.rows) lines.push(`${r.what.padEnd(14)} ${f(r.predicted).padStart(10)} ${f(r.measured).padStart(10)} ${r.ratio.toFixed(2).padStart(6)} ${r.within ? 'within' : 'OUTSIDE'}`);
  return lines.join('\n');
}
