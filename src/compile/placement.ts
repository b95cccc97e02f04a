/**
 * Placement: an accelerator and a weight format for every brick, minimizing the predicted latency,
 * energy, or both (`balanced`: each normalized by its best value, summed) of one reference request.
 *
 * Rules that make a (brick, accelerator, format) impossible, each reported with its reason:
 * - the accelerator does not run the format (RK3588's NPU has no w4a16; float bricks may be converted by
 *   the vendor toolchain to fp16 or w8a8, quantized bricks keep their format);
 * - a static-shape accelerator cannot take dims that stay dynamic at batch 1, except a decoder through
 *   the accelerator's LLM runtime (RKLLM), in that runtime's formats;
 * - an op the accelerator lacks, or an opset above what its toolchain reads;
 * - the brick does not fit one memory domain (RKNN IOMMU domain, about 4 GB); all bricks together must
 *   fit the board's memory.
 * Bricks are few (≤ 5) and choices per brick few (≤ 6), so every combination is tried: each is scheduled
 * as a request by the discrete-event scheduler, which sees the overlap of encoders and embedding.
 */
import { fail } from '../errors.js';
import type { BrickInfo, BrickSetInfo } from './analyze.js';
import { costModel, type BrickCostModel, type Workload } from './cost.js';
import { isFloatFormat, type WeightFormat } from './formats.js';
import { requestGraph, runDes } from './schedule.js';
import { val, type AcceleratorProfile, type TargetProfile } from './targets.js';

export const OBJECTIVES = ['latency', 'energy', 'balanced'] as const;
export type Objective = (typeof OBJECTIVES)[number];

export interface PlaceOverride { readonly brick: string; readonly accelerator: string; readonly format?: WeightFormat }

export type Route = 'ort' | 'rknn' | 'rkllm';

export interface Alternative {
  readonly accelerator: string;
  readonly format: WeightFormat | null;
  readonly route?: Route;
  readonly ok: boolean;
  readonly reason?: string;
  /** Per call at the reference workload: an encoder's image / clip, the decoder's prefill, the embed's prompt. */
  readonly callMs?: number;
  readonly decodeMsPerToken?: number;
  readonly mJ?: number | null;
  readonly memoryBytes?: number;
  chosen?: boolean;
}

export interface BrickPlacement {
  readonly brick: string;
  readonly kind: string;
  readonly accelerator: string;
  readonly backend: string;
  readonly format: WeightFormat;
  readonly sourceFormat: WeightFormat;
  readonly route: Route;
  readonly alternatives: readonly Alternative[];
}

export interface PlacementResult {
  readonly objective: Objective;
  readonly bricks: readonly BrickPlacement[];
  readonly models: ReadonlyMap<string, BrickCostModel>;
  readonly request: { readonly latencyMs: number; readonly energyMj: number | null; readonly memoryBytes: number };
  readonly combinations: number;
  readonly notes: readonly string[];
}

interface Choice { readonly brick: BrickInfo; readonly acc: AcceleratorProfile; readonly format: WeightFormat; readonly route: Route; readonly model: BrickCostModel }

/** The formats a brick can take on an accelerator, or why it cannot go there. */
export function formatsOn(b: BrickInfo, acc: AcceleratorProfile, target: TargetProfile, o: { calibrated?: boolean } = {}): { formats: WeightFormat[]; route: Route } | { reason: string } {
  const bad = [...b.ops].filter((o) => acc.unsupportedOps?.includes(o));
  if (acc.staticShapes && b.entry.kind === 'decoder') {
    if (!acc.llm) return { reason: `dynamic dims (${b.dynamicDims.join(', ')}) and no LLM runtime on this ${acc.kind}` };
    const formats = isFloatFormat(b.format) ? [...acc.llm.formats] : acc.llm.formats.includes(b.format) ? [b.format] : [];
    if (!formats.length) return { reason: `${acc.llm.runtime} on ${target.name} runs ${acc.llm.formats.join('/')} decoders, not ${b.format}` };
    return { formats, route: 'rkllm' };
  }
  if (acc.staticShapes && b.dynamicDims.length) return { reason: `needs static shapes; dims ${b.dynamicDims.join(', ')} stay dynamic` };
  if (bad.length) return { reason: `unsupported ops: ${bad.join(', ')}` };
  const maxOpset = val(acc.maxOpset);
  if (maxOpset !== undefined && b.opset > maxOpset) return { reason: `opset ${b.opset} > ${maxOpset}` };
  const route: Route = acc.backend === 'rknn' ? 'rknn' : 'ort';
  // The vendor toolchain converts float graphs itself: fp16, or int8 when real calibration inputs were
  // given (--calib DIR; never made-up ones); ORT runs what it is given.
  const wanted = route === 'rknn' && isFloatFormat(b.format) ? (o.calibrated ? ['fp16', 'w8a8'] : ['fp16']) as WeightFormat[] : [b.format];
  const formats = wanted.filter((f) => acc.formats.includes(f));
  if (!formats.length) return { reason: `${acc.title} does not run ${b.format}${route === 'rknn' ? '' : ' (nanomind does not convert formats at compile time; run quantize)'}` };
  return { formats, route };
}

export function place(set: BrickSetInfo, target: TargetProfile, o: { objective?: Objective; overrides?: readonly PlaceOverride[]; workload: Workload; calibrated?: boolean }): PlacementResult {
  const objective = o.objective ?? 'balanced';
  // A --place naming no brick or no accelerator of this target is a typo, not an infeasible placement.
  for (const p of o.overrides ?? []) {
    if (!set.bricks.some((b) => b.entry.name === p.brick || b.entry.kind === p.brick))
      throw fail('E_USAGE', `--place ${p.brick}=${p.accelerator}: unknown brick '${p.brick}' (bricks: ${set.bricks.map((b) => b.entry.name).join(', ')})`);
    if (!target.accelerators.some((a) => a.id === p.accelerator))
      throw fail('E_USAGE', `--place ${p.brick}=${p.accelerator}: unknown accelerator '${p.accelerator}' (${target.name} has: ${target.accelerators.map((a) => a.id).join(', ')})`);
  }
  const notes: string[] = [];
  const options: Choice[][] = [];
  const alternatives = new Map<string, Alternative[]>();
  for (const b of set.bricks) {
    const alts: Alternative[] = [];
    const choices: Choice[] = [];
    const forced = o.overrides?.find((x) => x.brick === b.entry.name || x.brick === b.entry.kind);
    for (const acc of target.accelerators) {
      const r = formatsOn(b, acc, target, { calibrated: o.calibrated });
      if ('reason' in r) { alts.push({ accelerator: acc.id, format: null, ok: false, reason: r.reason }); continue; }
      for (const f of r.formats) {
        const model = costModel(b, acc, f, target, o.workload);
        const domain = val(acc.memoryDomainBytes);
        const call = model.call(b.perToken ? o.workload.promptTokens : 1, b.perToken ? o.workload.promptTokens : 1);
        const decode = b.entry.kind === 'decoder' ? model.call(1, o.workload.promptTokens + o.workload.outputTokens) : undefined;
        const alt: Alternative = { accelerator: acc.id, format: f, route: r.route, ok: true, callMs: call.ms, decodeMsPerToken: decode?.ms, mJ: call.mJ, memoryBytes: model.memory.totalBytes };
        if (domain !== undefined && model.memory.totalBytes > domain) { alts.push({ ...alt, ok: false, reason: `${model.memory.totalBytes} B exceed one ${domain} B memory domain` }); continue; }
        if (forced && (forced.accelerator !== acc.id || (forced.format && forced.format !== f))) { alts.push({ ...alt, ok: false, reason: `--place ${forced.brick}=${forced.accelerator}${forced.format ? ':' + forced.format : ''}` }); continue; }
        alts.push(alt);
        choices.push({ brick: b, acc, format: f, route: r.route, model });
      }
    }
    if (!choices.length)
      throw fail('E_PLACE_INFEASIBLE', `brick '${b.entry.name}' (${b.format}) fits no accelerator of ${target.name}`, {
        notes: alts.map((a) => `${a.accelerator}${a.format ? ' ' + a.format : ''}: ${a.reason}`),
        hint: forced ? `drop or change --place ${forced.brick}=…` : 'quantize the brick to a format the target runs, or pick another --target',
      });
    alternatives.set(b.entry.name, alts);
    options.push(choices);
  }

  const idleW = val(target.power.idleW);
  const memLimit = val(target.memory.totalBytes) ?? Infinity;
  const evaluated: { combo: Choice[]; latency: number; energy: number | null; memory: number }[] = [];
  let count = 0;
  for (const combo of product(options)) {
    count++;
    const memory = combo.reduce((n, c) => n + c.model.memory.totalBytes, 0);
    if (memory > memLimit) continue;
    const models = new Map(combo.map((c) => [c.brick.entry.name, c.model]));
    const { spans, makespan } = runDes(requestGraph(set, models, o.workload, { request: 0 }));
    const active = spans.reduce<number | null>((n, s) => (n === null || s.task.mJ === null ? null : n + s.task.mJ), 0);
    evaluated.push({ combo, latency: makespan, energy: active === null || idleW === undefined ? null : active + idleW * makespan, memory });
  }
  if (!evaluated.length) throw fail('E_PLACE_INFEASIBLE', `no placement of ${set.bricks.length} bricks fits ${target.name}'s ${memLimit} B of memory`, { hint: 'quantize to smaller formats' });
  const energyKnown = evaluated.every((e) => e.energy !== null);
  if (objective !== 'latency' && !energyKnown) notes.push(`${target.name} has no power figures: placement minimizes latency instead of ${objective}`);
  const minL = Math.min(...evaluated.map((e) => e.latency));
  const minE = energyKnown ? Math.min(...evaluated.map((e) => e.energy!)) : 1;
  const score = (e: (typeof evaluated)[number]) =>
    !energyKnown || objective === 'latency' ? e.latency : objective === 'energy' ? e.energy! : e.latency / minL + e.energy! / minE;
  const best = evaluated.reduce((a, e) => (score(e) < score(a) - 1e-12 || (Math.abs(score(e) - score(a)) <= 1e-12 && e.memory < a.memory) ? e : a));

  const bricks = best.combo.map((c): BrickPlacement => {
    const alts = alternatives.get(c.brick.entry.name)!;
    for (const a of alts) a.chosen = a.ok && a.accelerator === c.acc.id && a.format === c.format;
    return { brick: c.brick.entry.name, kind: c.brick.entry.kind, accelerator: c.acc.id, backend: c.route === 'rkllm' ? 'rkllm' : c.acc.backend, format: c.format, sourceFormat: c.brick.format, route: c.route, alternatives: alts };
  });
  return {
    objective, bricks, combinations: count, notes,
    models: new Map(best.combo.map((c) => [c.brick.entry.name, c.model])),
    request: { latencyMs: best.latency, energyMj: best.energy, memoryBytes: best.memory },
  };
}

function* product<T>(lists: readonly (readonly T[])[]): Generator<T[]> {
  if (!lists.length) { yield []; return; }
  const [head, ...rest] = lists;
  for (const x of head) for (const tail of product(rest)) yield [x, ...tail];
}
