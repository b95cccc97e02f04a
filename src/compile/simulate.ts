/**
 * `plan --simulate`: a discrete-event simulation of a bundle's plan on its target, next to a monolithic
 * baseline (every brick on one CPU cluster in its stored format, strictly in order, copying every tensor
 * that crosses a brick boundary). Every figure is a model-based estimate: it rests on the target's sourced
 * numbers, on MODEL_ASSUMPTIONS, and on the scenario assumptions listed with the result.
 *
 * Scenarios: `chat` (one image + prompt → answer), `voice` (one audio clip + prompt → answer),
 * `camera:FPS` (a frame every 1/FPS s, each captioned; a frame is dropped when every ring slot is taken).
 * Battery life per power state: unconstrained (full rate), proportional (α = 0.5, the middle of the band:
 * rate and camera fps × α), critical (cascade: a trigger a minute, each brick loaded → run → released).
 */
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { Bundle } from '../formats/bundle.js';
import { readJsonFile } from '../formats/json-file.js';
import { analyzeBrickSet, type BrickSetInfo } from './analyze.js';
import { batteryJoules, costModel, type BrickCostModel, type Workload } from './cost.js';
import { isFloatFormat, type WeightFormat } from './formats.js';
import { MODEL_ASSUMPTIONS, ringBuffers } from './plan.js';
import { requestGraph, runDes, type Span, type Task } from './schedule.js';
import { checkTarget, val, type TargetProfile } from './targets.js';

export type Scenario = { readonly kind: 'chat' } | { readonly kind: 'voice' } | { readonly kind: 'camera'; readonly fps: number };
export const POWER_STATES = ['unconstrained', 'proportional', 'critical'] as const;
export type PowerState = (typeof POWER_STATES)[number];

export interface SimMetrics {
  readonly latencyMs: number;
  readonly energyMj: number | null;
  readonly peakMemoryMb: number;
  readonly batteryHours: Readonly<Record<PowerState, number | null>>;
  readonly requests: number;
  readonly dropped: number;
}

export interface SimResult extends SimMetrics {
  readonly estimate: true;
  readonly scenario: string;
  readonly target: string;
  readonly accelerators: readonly { readonly id: string; readonly title: string }[];
  readonly baseline: SimMetrics & { readonly accelerator: string };
  /** baseline ÷ plan for latency, energy and memory (above 1: the plan is better); plan ÷ baseline for battery hours. */
  readonly ratios: { readonly latency: number; readonly energy: number | null; readonly peakMemory: number; readonly batteryHours: Readonly<Record<PowerState, number | null>> };
  readonly assumptions: readonly string[];
  readonly timeline: readonly Span[];
  readonly baselineTimeline: readonly Span[];
}

/** Scenario rates the battery figures assume (not measurements). */
export const CHAT_PERIOD_S = 30;
export const TRIGGER_PERIOD_S = 300;
export const PROPORTIONAL_ALPHA = 0.5;

export function parseScenario(s: string): Scenario {
  if (s === 'chat' || s === 'voice') return { kind: s };
  const m = /^camera:(\d+(?:\.\d+)?)$/.exec(s);
  if (m && Number(m[1]) > 0) return { kind: 'camera', fps: Number(m[1]) };
  throw fail('E_USAGE', `--scenario '${s}': expected chat, voice or camera:FPS (e.g. camera:2)`);
}

export async function simulateBundle(bundle: Bundle, o: { scenario?: Scenario; batteryMah?: number } = {}): Promise<SimResult> {
  const target = checkTarget(await readJsonFile(join(bundle.dir, bundle.manifest.target.file), 'E_BUNDLE_INVALID'), join(bundle.dir, bundle.manifest.target.file));
  const set = await analyzeBrickSet(bundle.dir, { maxContext: bundle.plan.workload.maxContext });
  return simulate(set, target, bundle.plan.placement.map((p) => ({ brick: p.brick, accelerator: p.accelerator, format: p.format as WeightFormat })), bundle.plan.workload, o);
}

export function simulate(set: BrickSetInfo, target: TargetProfile, placement: readonly { brick: string; accelerator: string; format: WeightFormat }[], planWorkload: Workload,
  o: { scenario?: Scenario; batteryMah?: number } = {}): SimResult {
  const scenario = o.scenario ?? { kind: 'chat' };
  const has = (k: string) => set.bricks.some((b) => b.entry.kind === k);
  if (scenario.kind !== 'chat' && !has(scenario.kind === 'voice' ? 'audio' : 'vision'))
    throw fail('E_SIM_SCENARIO', `scenario '${scenario.kind}' needs a${scenario.kind === 'voice' ? 'n audio' : ' vision'} brick; this bundle has ${set.bricks.map((b) => b.entry.kind).join(', ')}`, { hint: '--scenario chat' });
  const w: Workload = { ...planWorkload, images: scenario.kind === 'voice' ? 0 : has('vision') ? 1 : 0, audioClips: scenario.kind === 'voice' ? 1 : 0 };
  const accOf = (id: string) => {
    const a = target.accelerators.find((x) => x.id === id);
    if (!a) throw fail('E_BUNDLE_INVALID', `plan places a brick on '${id}', which target ${target.name} lacks`);
    return a;
  };
  const models = new Map<string, BrickCostModel>(placement.map((p) => [p.brick, costModel(set.bricks.find((b) => b.entry.name === p.brick)!, accOf(p.accelerator), p.format, target, w)]));
  // The baseline runs each brick as stored; a float format the CPU has no kernels for (fp16 on most
  // CPU profiles) runs widened to fp32, as ONNX Runtime's CPU provider does.
  const baseFormat = (a: TargetProfile['accelerators'][number], f: WeightFormat): WeightFormat | undefined =>
    a.formats.includes(f) ? f : isFloatFormat(f) && a.formats.includes('fp32') ? 'fp32' : undefined;
  const base = target.accelerators.find((a) => a.kind === 'cpu' && set.bricks.every((b) => baseFormat(a, b.format)));
  if (!base) throw fail('E_SIM_BASELINE', `no CPU of ${target.name} runs every brick in its stored format, so there is no monolithic baseline`);
  const widened = set.bricks.filter((b) => baseFormat(base, b.format) !== b.format).map((b) => b.entry.name);
  const baseModels = new Map<string, BrickCostModel>(set.bricks.map((b) => [b.entry.name, costModel(b, base, baseFormat(base, b.format)!, target, w)]));
  const baseline = { accelerator: base.id, copyGBps: (val(target.memory.peakGBps) ?? NaN) * (val(base.memoryEfficiency) ?? 1), copyPowerW: val(base.activePowerW) ?? null };
  const slots = Math.max(1, ...ringBuffers(set, w).map((r) => r.slots));
  const frames = scenario.kind === 'camera' ? Math.min(200, Math.max(5, Math.round(scenario.fps * 10))) : 1;
  const period = scenario.kind === 'camera' ? 1000 / scenario.fps : 0;

  const run = (m: ReadonlyMap<string, BrickCostModel>, isBase: boolean) => {
    const tasks: Task[] = [];
    for (let r = 0; r < frames; r++) tasks.push(...requestGraph(set, m, w, { request: r, release: r * period, baseline: isBase ? baseline : undefined }));
    // A frame holds a ring slot from the start of its encoder until its prefill has read the rows.
    const holding = new Set<number>();
    const res = runDes(tasks, scenario.kind !== 'camera' ? {} : {
      beforeStart: (t) => {
        if (t.phase !== 'encode' || holding.has(t.request)) return true;
        if (holding.size >= slots) return false;
        holding.add(t.request);
        return true;
      },
      onDone: (t) => { if (t.phase === 'prefill') holding.delete(t.request); },
    });
    const done = new Map<number, number>();
    for (const s of res.spans) done.set(s.task.request, Math.max(done.get(s.task.request) ?? 0, s.end));
    const droppedReqs = new Set(res.dropped.map((t) => t.request));
    const completed = [...done.keys()].filter((r) => !droppedReqs.has(r));
    const latencyMs = completed.reduce((n, r) => n + done.get(r)! - r * period, 0) / Math.max(1, completed.length);
    const activeMj = res.spans.reduce<number | null>((n, s) => (n === null || s.task.mJ === null ? null : n + s.task.mJ), 0);
    return { res, completed: completed.length, dropped: droppedReqs.size, latencyMs, activeMj };
  };

  const idleW = val(target.power.idleW);
  const cameraW = scenario.kind === 'camera' ? val(target.power.cameraW) : scenario.kind === 'voice' ? val(target.power.microphoneW) : 0;
  const joules = batteryJoules(target, o.batteryMah);
  const metrics = (r: ReturnType<typeof run>, m: ReadonlyMap<string, BrickCostModel>, isBase: boolean): SimMetrics => {
    const span = Math.max(r.res.makespan, frames * period);
    const perReqActive = r.activeMj === null ? null : r.activeMj / Math.max(1, r.completed);
    const energyMj = perReqActive === null || idleW === undefined || cameraW === undefined ? null
      : perReqActive + (idleW + cameraW) * span / Math.max(1, r.completed);
    const peakBytes = [...m.values()].reduce((n, x) => n + x.memory.totalBytes, 0)
      + (isBase ? r.res.spans.filter((s) => s.task.phase === 'copy' && s.task.request === 0).reduce((n, s) => n + s.task.ms * baseline.copyGBps * 1e6 / 2, 0) : ringBuffers(set, w).reduce((n, x) => n + x.slots * x.slotBytes, 0));
    const hours = (state: PowerState): number | null => {
      if (joules === undefined || idleW === undefined || cameraW === undefined || perReqActive === null) return null;
      const busyS = r.latencyMs / 1000;
      let watts: number;
      if (state === 'critical') {
        // Cascade: one request per trigger, sensors off between triggers; loading bricks from storage
        // lengthens the request but draws no more than idle power (I/O power is not modelled).
        watts = idleW + perReqActive / 1000 / TRIGGER_PERIOD_S;
      } else {
        const alpha = state === 'proportional' ? PROPORTIONAL_ALPHA : 1;
        const periodS = scenario.kind === 'camera' ? frames * period / 1000 / Math.max(1, r.completed) : CHAT_PERIOD_S;
        const rate = alpha / Math.max(periodS, busyS);
        watts = idleW + cameraW + perReqActive / 1000 * rate;
      }
      return joules / watts / 3600;
    };
    return {
      latencyMs: r.latencyMs, energyMj, peakMemoryMb: peakBytes / 2 ** 20, requests: r.completed, dropped: r.dropped,
      batteryHours: { unconstrained: hours('unconstrained'), proportional: hours('proportional'), critical: hours('critical') },
    };
  };
  const ours = run(models, false);
  const theirs = run(baseModels, true);
  const a = metrics(ours, models, false);
  const b = metrics(theirs, baseModels, true);
  const ratio = (x: number | null, y: number | null) => (x === null || y === null || y === 0 ? null : x / y);
  return {
    estimate: true, scenario: scenario.kind === 'camera' ? `camera:${scenario.fps}` : scenario.kind, target: target.name,
    accelerators: target.accelerators.map((x) => ({ id: x.id, title: x.title })),
    ...a,
    baseline: { ...b, accelerator: base.id },
    ratios: {
      latency: b.latencyMs / a.latencyMs, energy: ratio(b.energyMj, a.energyMj), peakMemory: b.peakMemoryMb / a.peakMemoryMb,
      batteryHours: { unconstrained: ratio(a.batteryHours.unconstrained, b.batteryHours.unconstrained), proportional: ratio(a.batteryHours.proportional, b.batteryHours.proportional), critical: ratio(a.batteryHours.critical, b.batteryHours.critical) },
    },
    assumptions: [
      ...MODEL_ASSUMPTIONS,
      scenario.kind === 'camera' ? `camera at ${scenario.fps} fps for ${frames} frames; a frame is dropped when all ${slots} ring slots are held` : `one ${scenario.kind} request: ${w.images} image(s), ${w.audioClips} clip(s), ${w.promptTokens} prompt tokens, ${w.outputTokens} output tokens`,
      `battery: ${joules === undefined ? 'unknown' : `${(joules / 3600).toFixed(1)} Wh usable`}; unconstrained = ${scenario.kind === 'camera' ? 'every frame' : `a request every ${CHAT_PERIOD_S} s`}, proportional = α ${PROPORTIONAL_ALPHA} of that rate, critical = cascade on a trigger every ${TRIGGER_PERIOD_S} s`,
      'the board idles at its idle power between requests (no suspend); the baseline keeps every brick resident',
      `monolithic baseline: every brick on ${base.id} in its stored format${widened.length ? ` (${widened.join(', ')} widened to fp32)` : ''}, in order, with a copy at each brick boundary`,
    ],
    timeline: ours.res.spans, baselineTimeline: theirs.res.spans,
  };
}
