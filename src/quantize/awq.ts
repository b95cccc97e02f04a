/**
 * Activation-aware weight quantization in the style of AWQ (Lin et al., MLSys 2024, and llm-awq's
 * auto_scale / auto_clip): input channels that carry large activations are scaled up before 4-bit
 * quantization and the activation is divided by the same scale, so salient weights lose less.
 *
 * Per group of MatMuls reading the same activation x (q/k/v, gate/up):
 * 1. s = mean|x|^α, normalized by sqrt(max s · min s); α on a grid in [0, 1] (α = 0 is plain RTN, so the
 *    search can only improve the calibration loss) minimizing ‖X·W − (X/s)·Q(s⊙W)‖² over sampled rows
 *    of X and a strided subset of output columns;
 * 2. per block, the range shrink ratio minimizing the activation-weighted error Σ_k E[(x_k/s_k)²]·δ_k²
 *    (a diagonal stand-in for auto_clip's output error; cheap enough for full-size decoders);
 * 3. 1/s is folded into the producer when it is a Mul by a [K] constant read only by the group (the
 *    RMSNorm weight), otherwise a Mul by 1/s is inserted before the group.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type NodeProto } from 'onnx-buf';
import { blockScale, roundEven, type BlockParams } from './block-quant.js';
import type { ModelEdit } from './edit.js';
import { DT } from '../onnx/dtype.js';
import { floatTensor, readFloat } from './tensors.js';
import { nbitsTargets, weightNK, type NBitsTarget, type Prescale } from './formats/matmulnbits.js';
import type { ChannelStats } from './stats.js';

export interface AwqOptions {
  /** α steps in [0, 1] (default 20, as llm-awq). */
  readonly grid?: number;
  readonly clip?: boolean;
  /** Output columns per MatMul the scale search scores (default 64, strided). */
  readonly maxColumns?: number;
  /** Activation rows the scale search scores (default 64 of the sampled rows). */
  readonly rows?: number;
  /** α fixed instead of searched (an ablation). */
  readonly alpha?: number;
}

export interface AwqGroup {
  readonly input: string;
  readonly matmuls: number;
  readonly alpha: number;
  /** Sampled output error with plain RTN and with the chosen scales (same rows, same columns). */
  readonly lossRtn: number;
  readonly lossAwq: number;
  readonly folded: boolean;
}

/** Quantize-dequantize one row of K values block by block (what MatMulNBits will compute with). */
function fakeQuant(v: Float64Array, p: BlockParams, ratio = 1, out = new Float64Array(v.length)): Float64Array {
  const levels = (1 << p.bits) - 1;
  for (let k0 = 0; k0 < v.length; k0 += p.block) {
    const blk = v.subarray(k0, Math.min(v.length, k0 + p.block));
    const { scale, zp } = blockScale(blk, p, ratio);
    const inv = scale === 0 ? 0 : 1 / scale;
    for (let i = 0; i < blk.length; i++) out[k0 + i] = (Math.min(levels, Math.max(0, roundEven(blk[i] * inv) + zp)) - zp) * scale;
  }
  return out;
}

function groupLoss(ws: readonly Float32Array[], targets: readonly NBitsTarget[], rows: readonly Float32Array[], s: Float64Array,
  p: BlockParams, maxCols: number): number {
  const K = s.length;
  const v = new Float64Array(K), q = new Float64Array(K), e = new Float64Array(K);
  let loss = 0;
  targets.forEach((t, ti) => {
    const step = Math.max(1, Math.floor(t.N / maxCols));
    for (let n = 0; n < t.N; n += step) {
      const w = ws[ti].subarray(n * K, (n + 1) * K);
      for (let k = 0; k < K; k++) v[k] = w[k] * s[k];
      fakeQuant(v, p, 1, q);
      for (let k = 0; k < K; k++) e[k] = w[k] - q[k] / s[k];
      for (const x of rows) { let d = 0; for (let k = 0; k < K; k++) d += x[k] * e[k]; loss += d * d; }
    }
  });
  return loss;
}

const CLIP_RATIOS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55];

function clipSearch(w: Float32Array, N: number, K: number, s: Float64Array, sq: Float64Array, p: BlockParams): Float32Array {
  const kBlocks = Math.ceil(K / p.block);
  const clip = new Float32Array(N * kBlocks).fill(1);
  const h = Float64Array.from(sq, (x, k) => x / (s[k] * s[k]));
  const levels = (1 << p.bits) - 1, mid = 1 << (p.bits - 1);
  const v = new Float64Array(p.block);
  for (let n = 0; n < N; n++)
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * p.block, len = Math.min(p.block, K - k0);
      let m = 0, lo = 0, hi = 0;
      for (let i = 0; i < len; i++) {
        const x = (v[i] = w[n * K + k0 + i] * s[k0 + i]);
        if (Math.abs(x) > Math.abs(m)) m = x;
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      }
      let best = Infinity;
      for (const r of CLIP_RATIOS) {
        // Same scale and zero point as blockScale(…, r), inlined: this loop runs over every weight ten times.
        const scale = p.symmetric ? Math.fround((m * r) / -mid) : Math.fround(((hi - lo) * r) / levels);
        if (scale === 0) break;
        const zp = p.symmetric ? mid : Math.min(levels, Math.max(0, roundEven((-lo * r) / scale)));
        const inv = 1 / scale;
        let err = 0;
        for (let i = 0; i < len; i++) {
          const c = Math.min(levels - zp, Math.max(-zp, roundEven(v[i] * inv)));
          const d = v[i] - c * scale;
          err += h[k0 + i] * d * d;
        }
        if (err < best) { best = err; clip[n * kBlocks + b] = r; }
      }
    }
  return clip;
}

/**
 * Searches AWQ scales for every MatMulNBits target group that has channel statistics, rewrites the
 * activation side in `edit`, and returns the weight-side prescales keyed by the (possibly new) nodes.
 */
export async function planAwq(edit: ModelEdit, p: BlockParams, stats: ReadonlyMap<string, ChannelStats>, o: AwqOptions = {}):
  Promise<{ prescales: Map<NodeProto, Prescale>; groups: AwqGroup[] }> {
  const grid = o.grid ?? 20;
  const byInput = new Map<string, NBitsTarget[]>();
  for (const t of nbitsTargets(edit)) {
    if (!stats.get(t.node.input[0])?.absMean) continue;
    byInput.set(t.node.input[0], [...(byInput.get(t.node.input[0]) ?? []), t]);
  }
  const prescales = new Map<NodeProto, Prescale>();
  const groups: AwqGroup[] = [];
  for (const [input, targets] of byInput) {
    const st = stats.get(input)!;
    const K = targets[0].K;
    if (targets.some((t) => t.K !== K) || st.absMean!.length !== K) continue;
    const ws = await Promise.all(targets.map((t) => weightNK(edit, t)));
    const mean = st.absMean!;
    let best = { alpha: 0, loss: Infinity, s: new Float64Array(K).fill(1) };
    let lossRtn = 0;
    const alphas = o.alpha === undefined ? Array.from({ length: grid + 1 }, (_, g) => g / grid) : [0, o.alpha];
    for (const [g, alpha] of alphas.entries()) {
      const s = Float64Array.from(mean, (m) => Math.max(m, 1e-8) ** alpha);
      let lo = Infinity, hi = 0;
      for (const x of s) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
      const norm = Math.sqrt(lo * hi);
      for (let k = 0; k < K; k++) s[k] /= norm;
      const loss = groupLoss(ws, targets, st.samples.slice(0, o.rows ?? 64), s, p, o.maxColumns ?? 64);
      if (g === 0) lossRtn = loss;
      if (g > 0 || o.alpha === undefined) if (loss < best.loss) best = { alpha, loss, s };
    }
    const s32 = Float32Array.from(best.s);
    const folded = best.alpha > 0 ? await applyActivationScale(edit, input, targets, s32) : undefined;
    const nodes = folded?.nodes ?? targets.map((t) => t.node);
    targets.forEach((t, i) => prescales.set(nodes[i], {
      colScale: best.alpha > 0 ? s32 : undefined,
      clip: o.clip === false ? undefined : clipSearch(ws[i], t.N, K, best.s, st.sqMean!, p),
    }));
    groups.push({ input, matmuls: targets.length, alpha: best.alpha, lossRtn, lossAwq: best.loss, folded: folded?.folded ?? false });
  }
  return { prescales, groups };
}

/** Divides the group's activation by s: folded into a Mul-by-constant producer when safe, else a new Mul. */
async function applyActivationScale(edit: ModelEdit, input: string, targets: readonly NBitsTarget[], s: Float32Array): Promise<{ nodes: NodeProto[]; folded: boolean }> {
  const group = new Set(targets.map((t) => t.node));
  const dt = targets[0].weight.dataType === DT.FLOAT16 ? DT.FLOAT16 : DT.FLOAT;
  const consumers = edit.nodes.filter((n) => n.input.includes(input));
  const producer = edit.nodes.find((n) => n.output.includes(input));
  const idx = producer?.opType === 'Mul' && !producer.domain ? producer.input.findIndex((i) => {
    const t = edit.inits.get(i);
    return t?.dataType === dt && t.dims.length >= 1 && Number(t.dims[t.dims.length - 1]) === s.length
      && t.dims.reduce((a, d) => a * Number(d), 1) === s.length;
  }) : -1;
  const isOutput = edit.model.graph!.output.some((o) => o.name === input);
  if (producer && idx >= 0 && !isOutput && consumers.every((c) => group.has(c))) {
    const t = edit.inits.get(producer.input[idx])!;
    const c = await readFloat(t, edit.dir);
    const name = edit.addInit(floatTensor(edit.unique(`${t.name}_awq`), t.dims.map(Number), c.map((v, k) => v / s[k]), dt));
    edit.replace(producer, create(NodeProtoSchema, { ...producer, input: producer.input.map((x, i) => (i === idx ? name : x)) }));
    return { nodes: targets.map((t) => t.node), folded: true };
  }
  const inv = edit.addInit(floatTensor(edit.unique(`${input}_awq_inv_scale`), [s.length], s.map((x) => 1 / x), dt));
  const scaled = edit.unique(`${input}_awq`);
  edit.insertBefore(edit.nodes.find((n) => group.has(n)), edit.node('Mul', [input, inv], [scaled]));
  const nodes = targets.map((t) => {
    const n = create(NodeProtoSchema, { ...t.node, input: t.node.input.map((i) => (i === input ? scaled : i)) });
    edit.replace(t.node, n);
    return n;
  });
  return { nodes, folded: false };
}
