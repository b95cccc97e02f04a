/**
 * The schedule plan (`plan.json`, format in src/formats/bundle.ts): stages and their dependencies, the
 * encoder ∥ decoder pipeline, ring-buffer slots between encoders and the decoder, NPU memory domains,
 * CPU affinity and NPU core masks, the battery power policy, and the predicted cost of one request.
 */
import type { BrickMemory, MemoryDomainPlan, Plan, PlanStage, RingBufferPlan } from '../formats/bundle.js';
import { PLAN_FORMAT, PLAN_VERSION } from '../formats/bundle.js';
import { slotBytesFor, type SlotDtype } from '../run/buffers/ring-buffer.js';
import type { BrickSetInfo } from './analyze.js';
import type { Workload } from './cost.js';
import type { PlacementResult } from './placement.js';
import { encoderTokens } from './schedule.js';
import { val, type TargetProfile } from './targets.js';

/** Every estimate in a plan or a simulation rests on these, besides the target's sourced numbers. */
export const MODEL_ASSUMPTIONS: readonly string[] = [
  'roofline per brick call: max(FLOPs / (peak × computeEfficiency), bytes / (peak bandwidth × memoryEfficiency)) + launch overhead',
  'a decode step reads all weights at the brick\'s format plus the KV cache at the current context; attention adds 4 × layers × context × hidden FLOPs per token',
  'FLOPs come from weight shapes (bricks.json `flops`), not from a profiler',
  'accelerators running at the same time do not slow each other down (shared DRAM bandwidth is not modelled)',
  'encoder → decoder hand-off through the shared ring buffer costs no copy (unified memory); the monolithic baseline copies every boundary tensor (read + write)',
  'energy = board idle power × wall time + each accelerator\'s active power × its busy time',
];

/** Encoder rows cross to the decoder through a ring of slots; two let the encoder fill one while the decoder reads the other. */
export function ringBuffers(set: BrickSetInfo, w: Workload): RingBufferPlan[] {
  const rings: RingBufferPlan[] = [];
  for (const c of set.manifest.connections) {
    if (!c.merge) continue;
    const name = c.from.slice(0, c.from.indexOf('.'));
    const b = set.bricks.find((x) => x.entry.name === name);
    const out = b?.entry.outputs.find((o) => o.name === c.from.slice(c.from.indexOf('.') + 1));
    if (!b || !out || !b.tokens || !b.hidden) continue;
    const dtype = (out.dtype === 'float16' ? 'float16' : 'float32') as SlotDtype;
    const perRequest = b.entry.kind === 'audio' ? w.audioClips : w.images;
    rings.push({
      from: c.from, to: c.to, slots: Math.max(2, perRequest), tokens: b.tokens, hidden: b.hidden, dtype,
      slotBytes: slotBytesFor({ tokens: b.tokens, hidden: b.hidden, dtype }), tokensFrom: b.tokensFrom,
      why: `${b.tokens} ${b.entry.kind === 'audio' ? 'audio' : 'image'} tokens (from ${b.tokensFrom}) × ${b.hidden} × ${dtype}; ${Math.max(2, perRequest)} slots so the encoder fills one while the decoder reads another`,
    });
  }
  return rings;
}

export function buildPlan(set: BrickSetInfo, target: TargetProfile, placed: PlacementResult, w: Workload): Plan {
  const accOf = (brick: string) => target.accelerators.find((a) => a.id === placed.bricks.find((p) => p.brick === brick)!.accelerator)!;
  const kind = (k: string) => placed.bricks.filter((p) => p.kind === k);
  const stages: PlanStage[] = [];
  const predicted = (brick: string, tokens: number, context: number) => {
    const c = placed.models.get(brick)!.call(tokens, context);
    return { ms: round(c.ms), mJ: c.mJ === null ? null : round(c.mJ) };
  };
  const encoders: string[] = [];
  for (const p of [...kind('vision'), ...kind('projector'), ...kind('audio')]) {
    const dep = p.kind === 'projector' ? kind('vision').map((v) => `encode:${v.brick}`) : [];
    stages.push({ id: `encode:${p.brick}`, brick: p.brick, phase: 'encode', accelerator: p.accelerator, dependsOn: dep, repeat: p.kind === 'audio' ? 'per-clip' : 'per-image', predicted: predicted(p.brick, 1, 1) });
    if (p.kind !== 'vision' || !kind('projector').length) encoders.push(`encode:${p.brick}`);
  }
  for (const p of kind('embed')) stages.push({ id: `embed:${p.brick}`, brick: p.brick, phase: 'embed', accelerator: p.accelerator, dependsOn: [], tokens: w.promptTokens, predicted: predicted(p.brick, w.promptTokens, w.promptTokens) });
  // Each generated token is embedded before its decode step: one more call per token.
  const tokenEmbeds = kind('decoder').length ? kind('embed') : [];
  const prompt = w.promptTokens + encoderTokens(set, w);
  for (const p of kind('decoder')) {
    stages.push({ id: `prefill:${p.brick}`, brick: p.brick, phase: 'prefill', accelerator: p.accelerator, dependsOn: [...encoders, ...kind('embed').map((e) => `embed:${e.brick}`)], tokens: prompt, predicted: predicted(p.brick, prompt, prompt) });
    for (const e of tokenEmbeds)
      stages.push({ id: `embed-token:${e.brick}`, brick: e.brick, phase: 'embed', accelerator: e.accelerator, dependsOn: [`prefill:${p.brick}`], repeat: 'per-token', tokens: 1, predicted: predicted(e.brick, 1, 1) });
    stages.push({ id: `decode:${p.brick}`, brick: p.brick, phase: 'decode', accelerator: p.accelerator, dependsOn: [`prefill:${p.brick}`, ...tokenEmbeds.map((e) => `embed-token:${e.brick}`)], repeat: 'per-token', tokens: 1, predicted: predicted(p.brick, 1, prompt + Math.ceil(w.outputTokens / 2)) });
  }

  const perBrick: Record<string, BrickMemory> = {};
  for (const [brick, m] of placed.models) perBrick[brick] = m.memory;
  const domains: MemoryDomainPlan[] = [];
  for (const p of placed.bricks.filter((x) => accOf(x.brick).kind === 'npu').sort((a, b) => perBrick[b.brick].totalBytes - perBrick[a.brick].totalBytes)) {
    const limit = val(accOf(p.brick).memoryDomainBytes) ?? null;
    const bytes = perBrick[p.brick].totalBytes;
    const d = domains.find((x) => x.accelerator === p.accelerator && (x.limitBytes === null || x.bytes + bytes <= x.limitBytes));
    if (d) domains[domains.indexOf(d)] = { ...d, bricks: [...d.bricks, p.brick], bytes: d.bytes + bytes };
    else domains.push({ baseDomainId: domains.length, accelerator: p.accelerator, bricks: [p.brick], bytes, limitBytes: limit });
  }
  const rings = ringBuffers(set, w);
  const ringBytes = rings.reduce((n, r) => n + r.slots * r.slotBytes, 0);
  const weightsEtc = Object.values(perBrick).reduce((n, m) => n + m.totalBytes, 0);

  const affinity = placed.bricks.map((p) => {
    const a = accOf(p.brick);
    if (a.kind === 'npu') return { brick: p.brick, accelerator: a.id, coreMask: a.coreMask, why: `${p.route === 'rkllm' ? 'RKLLM' : 'RKNN'} on all NPU cores; the plan runs one NPU brick at a time` };
    if (a.kind === 'cpu') return {
      brick: p.brick, accelerator: a.id, cpuList: a.cpuList, threads: val(a.cores),
      why: p.kind === 'decoder' ? 'decode is memory-bound and latency-critical: pin it to the big cores' : `runs on ${a.title}`,
    };
    return { brick: p.brick, accelerator: a.id, why: `runs on ${a.title}` };
  });

  const high = val(target.powerPolicy.highPercent) ?? 50, low = val(target.powerPolicy.lowPercent) ?? 15;
  const order = ['vision', 'projector', 'audio', 'embed', 'decoder'].flatMap((k) => kind(k).map((p) => p.brick));
  return {
    format: PLAN_FORMAT, version: PLAN_VERSION, estimate: true, target: target.name, objective: placed.objective, workload: w,
    assumptions: [...MODEL_ASSUMPTIONS, ...placed.notes],
    placement: placed.bricks.map((p) => ({ brick: p.brick, accelerator: p.accelerator, backend: p.backend, format: p.format, route: p.route })),
    stages,
    pipeline: {
      encoderDecoderOverlap: encoders.some((e) => stages.find((s) => s.id === e)!.accelerator !== kind('decoder')[0]?.accelerator),
      description: 'encoders of request k+1 run while the decoder generates request k; encoder rows reach the decoder through the ring buffers without a copy',
    },
    ringBuffers: rings,
    memory: { domains, perBrick, ringBytes, peakBytes: weightsEtc + ringBytes, boardBytes: val(target.memory.totalBytes) ?? null },
    affinity,
    powerPolicy: {
      highPercent: high, lowPercent: low,
      states: {
        unconstrained: { when: `battery > ${high}%`, workRate: 1 },
        proportional: { when: `${low}% < battery ≤ ${high}%`, alpha: `(battery − ${low}) / (${high} − ${low})`, scales: ['camera fps', 'encoder work rate', 'requests admitted'] },
        critical: { when: `battery ≤ ${low}%`, mode: 'cascade', order, passOn: 'wait for a trigger, then load → run → release each brick in turn; only text and embeddings pass between them' },
      },
    },
    predicted: { latencyMs: round(placed.request.latencyMs), energyMj: placed.request.energyMj === null ? null : round(placed.request.energyMj), memoryBytes: weightsEtc + ringBytes },
  };
}

/** Three decimals: plan figures are estimates, more digits would only suggest precision they lack. */
export const round = (x: number): number => Math.round(x * 1000) / 1000;
