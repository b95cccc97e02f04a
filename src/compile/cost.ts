/**
 * The cost model: a roofline per brick call on one accelerator, in one format.
 *
 *   time   = max(FLOPs / (peak[dtype] × computeEfficiency), bytes / (peakGBps × memoryEfficiency)) + fixed
 *   fixed  = launchOverheadMs + nodes × (nodeOverheadMs + rows × hidden × nodeElementNs) + (inputs + outputs) × tensorOverheadMs
 *            + runtime.tokenLoopMs (a decoder call: one per generated token; the prompt's call: runtime.prefillLoopMs)
 *            + runtime.imagePreprocessMs + imagePreprocessMsPerMpx × the vision input's pixels (a vision call: one per image)
 *   energy = activePowerW × time            (board idle power is charged per request, not per brick)
 *
 * rows = the call's tokens (embed, decoder) or the rows an encoder emits: every node is taken to touch
 * one hidden-wide row per row, which is what the element-wise nodes (norms, residual adds, activations,
 * RoPE) do and what the FLOP count, MatMuls only, leaves out.
 * The fixed part is what a tiny model pays on every call whatever its size: ORT's session.run, a kernel
 * dispatch per node, marshalling per feed and fetch, and nanomind's own generation loop and image
 * preprocessing. `bench --calibrate` measures each on the host with models of its own (never the bundle
 * being predicted); a vendor profile that lacks a term adds 0 for it.
 *
 * Bytes moved per call are the weights at the brick's format (read once per call, so a prefill of P
 * tokens reads them once and a decode step reads them every token), the activations crossing the brick's
 * boundary, and for a decoder the KV cache read at the current context plus the new entry written.
 * Attention over the cache adds 4 × layers × context × hidden FLOPs per token. Every figure is a
 * model-based estimate; the numbers it rests on carry their sources in the target profile.
 */
import type { BrickInfo } from './analyze.js';
import { kvBytesPerToken, tensorBytesAt } from './analyze.js';
import { activationBytes, bytesPerParam, computeDtype, type WeightFormat } from './formats.js';
import { val, type AcceleratorProfile, type TargetProfile } from './targets.js';

export interface Workload {
  readonly images: number;
  readonly audioClips: number;
  readonly promptTokens: number;
  readonly outputTokens: number;
  readonly maxContext: number;
}

export const DEFAULT_WORKLOAD: Omit<Workload, 'maxContext'> = { images: 1, audioClips: 1, promptTokens: 32, outputTokens: 64 };

export interface CallCost {
  readonly ms: number;
  /** Active energy of the accelerator; null when its power is not known. */
  readonly mJ: number | null;
  readonly computeMs: number;
  readonly memoryMs: number;
  /** Of `ms`, the runtime's own work around the brick call (generation loop, image preprocessing), not ORT's. */
  readonly runtimeMs: number;
  readonly bound: 'compute' | 'memory' | 'overhead';
}

export interface MemoryFootprint {
  readonly weightsBytes: number;
  readonly activationBytes: number;
  readonly kvCacheBytes: number;
  readonly totalBytes: number;
}

export interface BrickCostModel {
  readonly accelerator: string;
  readonly format: WeightFormat;
  readonly memory: MemoryFootprint;
  /** One call: an image / clip through an encoder, or P tokens through the embed or decoder (context P for prefill). */
  call(tokens: number, context: number): CallCost;
}

/** Weights at `format`: the stored bytes when the brick already is in it, else params × bytes per param. */
export const weightBytesAt = (b: BrickInfo, format: WeightFormat): number =>
  format === b.format ? b.weightBytes : Math.round(b.params * bytesPerParam(format));

export function costModel(b: BrickInfo, acc: AcceleratorProfile, format: WeightFormat, target: TargetProfile, w: Workload): BrickCostModel {
  const dtype = computeDtype(format, acc.kind);
  const peaks = Object.values(acc.peakGops).map(val).filter((x): x is number => x !== undefined);
  const peak = val(acc.peakGops[dtype]) ?? (peaks.length ? Math.min(...peaks) : NaN);
  const gops = peak * (val(acc.computeEfficiency) ?? 1);
  const gbps = (val(target.memory.peakGBps) ?? NaN) * (val(acc.memoryEfficiency) ?? 1);
  const ioTensors = b.entry.inputs.length + b.entry.outputs.length;
  const elementNs = val(acc.nodeElementNs) ?? 0;
  const elementMs = (tokens: number) => b.entry.nodes * (b.perToken ? tokens : b.tokens ?? 1) * (b.hidden ?? 0) * elementNs / 1e6;
  const overhead = (val(acc.launchOverheadMs) ?? 0) + b.entry.nodes * (val(acc.nodeOverheadMs) ?? 0) + ioTensors * (val(acc.tensorOverheadMs) ?? 0);
  // A decoder call over several tokens is the prompt's step: the runtime's prefill cost, else its per-token loop.
  const loopMs = (tokens: number) => (b.entry.kind !== 'decoder' ? 0
    : tokens > 1 ? val(target.runtime?.prefillLoopMs) ?? val(target.runtime?.tokenLoopMs) ?? 0 : val(target.runtime?.tokenLoopMs) ?? 0);
  const imageMs = b.entry.kind === 'vision' ? (val(target.runtime?.imagePreprocessMs) ?? 0) + (val(target.runtime?.imagePreprocessMsPerMpx) ?? 0) * inputPixels(b) / 1e6 : 0;
  const power = val(acc.activePowerW);
  const weights = weightBytesAt(b, format);
  const actScale = activationBytes(format, acc.kind) / 4;
  const kvPerToken = b.kv ? kvBytesPerToken(b.kv) * (activationBytes(format, acc.kind) / 4) : 0;
  const io = (tokens: number, context: number) => [...b.entry.inputs, ...b.entry.outputs]
    .filter((t) => !/^(past_key_values|present)\./.test(t.name))
    .reduce((n, t) => n + tensorBytesAt(t, { sequence_length: tokens, total_sequence_length: context, past_sequence_length: context - tokens }), 0) * actScale;

  const call = (tokens: number, context: number): CallCost => {
    const units = b.perToken ? tokens : 1;
    const attention = b.kv && b.hidden ? 4 * b.kv.layers * b.hidden * tokens * context : 0;
    const flops = b.flops * units + attention;
    // An embedding lookup reads only the rows it gathers, not the whole table.
    const weightRead = b.entry.kind === 'embed' ? tokens * (b.hidden ?? 0) * bytesPerParam(format) : weights;
    const bytes = weightRead + io(tokens, context) + kvPerToken * context;
    const computeMs = flops / (gops * 1e9) * 1e3;
    const memoryMs = bytes / (gbps * 1e9) * 1e3;
    const work = Math.max(computeMs, memoryMs);
    const runtimeMs = loopMs(tokens) + imageMs;
    const fixed = overhead + elementMs(tokens) + runtimeMs;
    const ms = work + fixed;
    return { ms, mJ: power === undefined ? null : power * ms, computeMs, memoryMs, runtimeMs, bound: fixed > work ? 'overhead' : computeMs >= memoryMs ? 'compute' : 'memory' };
  };

  const prefill = promptTokensFor(b, w);
  const activation = io(prefill, prefill);
  const kvCache = kvPerToken * w.maxContext;
  return {
    accelerator: acc.id, format, call,
    memory: { weightsBytes: weights, activationBytes: Math.round(activation), kvCacheBytes: Math.round(kvCache), totalBytes: Math.round(weights + activation + kvCache) },
  };
}

/** Pixels of a vision brick's image input (H × W of its static shape, else of the declared one; 0 when unknown). */
function inputPixels(b: BrickInfo): number {
  const first = b.entry.inputs[0];
  const dims = (first && b.staticShapes?.[first.name]) ?? first?.shape ?? [];
  const [h, w] = dims.slice(-2);
  return typeof h === 'number' && typeof w === 'number' ? h * w : 0;
}

/** Tokens a decoder's prefill processes: the prompt plus every image / audio token merged into it. */
export function promptTokensFor(b: BrickInfo, w: Workload, encoderTokens = 0): number {
  return b.perToken ? w.promptTokens + encoderTokens : 1;
}

/** Joules of a battery as delivered to the board. */
export function batteryJoules(target: TargetProfile, mAh = val(target.battery.capacityMah)): number | undefined {
  const v = val(target.battery.voltage), eff = val(target.battery.converterEfficiency);
  return mAh === undefined || v === undefined || eff === undefined ? undefined : (mAh / 1000) * v * 3600 * eff;
}
