/**
 * The simulator against the machine: plan.json's per-stage predictions (compile's cost model, fed by
 * `bench --calibrate` on the host target) beside what `bench` measures for the plan's own reference
 * request (same prompt tokens, images, output tokens). A row is within when measured/predicted − 1 is
 * inside ±tolerance (default 25 %).
 */
import type { Plan } from '../formats/bundle.js';
import type { BenchResult, Spread } from './bench.js';

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

/**
 * `stat` picks bench's figure: the median of its runs (default), or the best one (least ms, most tok/s),
 * which is what `bench --calibrate` keeps of its own runs: on a loaded machine the best run is the one
 * that, like the calibration, was least preempted.
 */
export function planVsMeasured(plan: Plan, b: BenchResult, tolerance = 0.25, stat: 'median' | 'best' = 'median'): PlanCheck {
  const ms_ = (s: Spread | null | undefined) => (s ? (stat === 'median' ? s.median : s.min) : undefined);
  const rate = (s: Spread) => (stat === 'median' ? s.median : s.max);
  const ms = (keep: (s: Plan['stages'][number]) => boolean) => plan.stages.filter(keep).reduce((n, s) => n + s.predicted.ms, 0);
  // bench encodes one media item: its kind picks the encoder stages compared (one image, or one clip).
  const clip = b.model.media?.startsWith('audio') ?? false;
  // The prompt's tokens as compile predicted its prefill for: text plus the request's own image / audio rows.
  const prompt = plan.stages.find((s) => s.phase === 'prefill')?.tokens;
  // bench's prefill runs from the start of generate (the prompt's embedding) to the first logits;
  // a decode step is one token's embedding and one decoder call.
  const prefillMs = ms((s) => (s.phase === 'embed' && !s.repeat) || s.phase === 'prefill');
  const stepMs = ms((s) => s.repeat === 'per-token');
  const pairs: [PlanCheckRow['what'], number, number | undefined][] = [
    ['encode ms', ms((s) => s.phase === 'encode' && s.repeat === (clip ? 'per-clip' : 'per-image')), ms_(b.encodeMs)],
    // a plan written before stages carried their tokens has no prefill figure to compare
    ['prefill tok/s', prompt === undefined ? NaN : prompt / (prefillMs / 1000), rate(b.prefillTokPerS)],
    ['decode tok/s', 1000 / stepMs, rate(b.decodeTokPerS)],
    ['latency ms', plan.predicted.latencyMs, ms_(b.totalMs)],
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
