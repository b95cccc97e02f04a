/**
 * The lift: recognises a Llama / Qwen2 / Qwen3-style decoder brick exported the Optimum / transformers.js
 * way (plain MatMul projections with `[in, out]` float weights, RMSNorm from basic ops, rotary in-graph,
 * Concat KV cache) and packs its weights for the native engine (../../formats/native-weights.ts).
 *
 * Also onnxruntime-genai's model builder layout (src/fixtures/gqa-decoder.ts): `/model/layers.3/attn/qkv_proj/MatMul`
 * (fused or not), GroupQueryAttention with rotary inside (checked: do_rotary 1, not interleaved, no local window,
 * no softcap, scale 1/sqrt(head_dim)), SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization, and its q4
 * files' MatMulNBits (dequantized, then packed again in the engine's blocks).
 *
 * Recognition is by module path, which these exporters keep in node names (`/model/layers.3/self_attn/q_proj/MatMul`)
 * and in the names of the norm initializers (`model.layers.3.input_layernorm.weight`); every projection must then
 * have the shape config.json implies, every layer must have all of them, and the graph may hold no op outside
 * the list such a decoder uses. Anything else throws E_NATIVE_LIFT with what was missing, and the caller keeps
 * the brick on ONNX Runtime. Not lifted: Gemma's (1 + w) norms and scaled embeddings, LongRoPE, sliding windows, mRoPE.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeProto, TensorProto } from 'onnx-buf';
import { fail } from '../../errors.js';
import { DT, halfToFloat } from '../../onnx/dtype.js';
import { dequantizeBlocks, unpackZeroPoints } from '../../quantize/block-quant.js';
import { allTensors, loadModel, tensorBytes } from '../../onnx/model-io.js';
import {
  LAYER_TENSORS, NATIVE_FORMAT_VERSION, quantizeRows, type LayerTensor, type NativeBits, type NativeConfig,
} from '../../formats/native-weights.js';

/** Ops an Optimum-style Llama/Qwen decoder is made of; anything else means a structure the engine does not run. */
const KNOWN_OPS = new Set(['MatMul', 'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Sqrt', 'Reciprocal', 'ReduceMean', 'Sigmoid', 'Softmax',
  'Transpose', 'Reshape', 'Concat', 'Slice', 'Neg', 'Unsqueeze', 'Squeeze', 'Shape', 'Gather', 'Cast', 'Range', 'Cos', 'Sin',
  'Expand', 'Where', 'And', 'LessOrEqual', 'Less', 'Greater', 'Equal', 'Constant', 'ConstantOfShape', 'ScatterND', 'Trilu',
  'Identity', 'Not', 'Or', 'Max', 'Min', 'IsNaN', 'Tile', 'SimplifiedLayerNormalization',
  // onnxruntime-genai builder graphs
  'SkipSimplifiedLayerNormalization', 'GroupQueryAttention', 'ReduceSum', 'MatMulNBits',
  // a block-quantized embedding table (nanomind's cpu-q4 / hybrid recipes on a decoder that takes input_ids)
  'GatherBlockQuantized']);

const PROJ = /layers\.(\d+)[./](?:self_attn|attn|mlp)[./](q_proj|k_proj|v_proj|qkv_proj|o_proj|gate_proj|up_proj|down_proj)\b/;
// `_awq`: nanomind's AWQ folds its inverse channel scales into the norm weight before the projections it scaled.
const NORM = /layers\.(\d+)[./](?:(input_layernorm|post_attention_layernorm)|(?:self_attn|attn)[./](q_norm|k_norm))[./](?:layernorm[./])?weight(?:_awq)?$/;
const FINAL_NORM = /(?:^|[./])norm[./]weight(?:_awq)?$|final_norm_layernorm[./]weight$/;
/** AWQ's unfolded inverse scale: `Mul(x, <x>_awq_inv_scale)` in front of the projections it scaled (src/quantize/awq.ts). */
const AWQ_INV = /_awq_inv_scale$/;

export interface HfTextConfig {
  readonly hidden_size: number; readonly num_hidden_layers: number; readonly num_attention_heads: number;
  readonly num_key_value_heads?: number; readonly head_dim?: number; readonly intermediate_size: number;
  readonly vocab_size: number; readonly rms_norm_eps: number; readonly rope_theta?: number; readonly model_type: string;
  readonly rope_scaling?: { rope_type?: string; type?: string; factor?: number; low_freq_factor?: number; high_freq_factor?: number; original_max_position_embeddings?: number } | null;
  readonly hidden_act?: string;
}

export interface LiftResult { readonly config: NativeConfig; readonly weights: Uint8Array }

const SUPPORTED_TYPES = new Set(['llama', 'qwen2', 'qwen3', 'mistral', 'phi3']);

/** Rotary inverse frequencies with HF's rope scaling ('default' and 'llama3'). */
export function invFreq(cfg: HfTextConfig, d: number): number[] {
  const theta = cfg.rope_theta ?? 10000;
  const base = Array.from({ length: d / 2 }, (_, j) => 1 / theta ** ((2 * j) / d));
  const rs = cfg.rope_scaling;
  const kind = rs?.rope_type ?? rs?.type ?? 'default';
  if (kind === 'default') return base;
  if (kind !== 'llama3') throw fail('E_NATIVE_LIFT', `rope_scaling type '${kind}' is not supported by the native engine`);
  const factor = rs!.factor ?? 8, lo = rs!.low_freq_factor ?? 1, hi = rs!.high_freq_factor ?? 4, old = rs!.original_max_position_embeddings ?? 8192;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old / hi) return f;
    if (wavelen > old / lo) return f / factor;
    const smooth = (old / wavelen - lo) / (hi - lo);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/** What the lift found that may decide the pack's bits (src/compile/native/choose.ts). */
export interface LiftFacts {
  /** Projections whose AWQ inverse scales were folded into their (block-quantized) weights: repacking them re-rounds. */
  readonly awqFolded: number;
}

/** `bits`, or a choice made from what the lift found (called once, before packing). */
export async function liftDecoder(file: string, cfg: HfTextConfig, bits: NativeBits | ((facts: LiftFacts) => NativeBits)): Promise<LiftResult> {
  const why = (msg: string, notes?: string[]) => fail('E_NATIVE_LIFT', `${file}: ${msg}`, { file, notes, hint: 'this decoder stays on ONNX Runtime' });
  if (!SUPPORTED_TYPES.has(cfg.model_type)) throw why(`model_type '${cfg.model_type}' is not a Llama / Qwen2 / Qwen3 decoder`);
  if ((cfg.hidden_act ?? 'silu') !== 'silu') throw why(`hidden_act '${cfg.hidden_act}' (the engine runs SwiGLU with SiLU)`);
  const m = await loadModel(file);
  const g = m.model.graph!;
  const unknown = [...new Set(g.node.map((n) => n.opType).filter((t) => !KNOWN_OPS.has(t)))];
  if (unknown.length) throw why(`ops the engine does not model: ${unknown.join(', ')}`);
  const inits = new Map<string, TensorProto>();
  for (const t of allTensors(g)) inits.set(t.name, t);
  const floats = async (t: TensorProto): Promise<Float32Array> => {
    if (t.dataType !== DT.FLOAT) throw why(`initializer '${t.name}' is not float32`);
    const b = await tensorBytes(t, m.dir);
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  const missing0: string[] = [];
  const consumers = new Map<string, NodeProto[]>();
  for (const n of g.node) for (const i of n.input) consumers.set(i, [...(consumers.get(i) ?? []), n]);

  const L = cfg.num_hidden_layers, h = cfg.hidden_size, H = cfg.num_attention_heads, KV = cfg.num_key_value_heads ?? H;
  const d = cfg.head_dim ?? h / H, I = cfg.intermediate_size, V = cfg.vocab_size;
  const want: Record<string, [number, number]> = {
    q_proj: [h, H * d], k_proj: [h, KV * d], v_proj: [h, KV * d], o_proj: [H * d, h], gate_proj: [h, I], up_proj: [h, I], down_proj: [I, h],
  };
  type Proj = { w: TensorProto | (() => Promise<Float32Array>); bias?: TensorProto };
  const proj = Array.from({ length: L }, () => new Map<string, Proj>());
  let lmHead: TensorProto | undefined, embed: TensorProto | undefined;
  want.qkv_proj = [h, (H + 2 * KV) * d];
  let lmHeadNBits: (() => Promise<Float32Array>) | undefined;
  let embedQ: { dims: number[]; read: () => Promise<Float32Array> } | undefined;
  const producer = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) producer.set(o, n);
  const awqMuls = g.node.filter((n) => n.opType === 'Mul' && n.input.some((i) => AWQ_INV.test(i) && inits.has(i)));
  const folded = new Set<NodeProto>();
  /**
   * A projection's weight read, with an AWQ inverse scale in front of it folded into its rows: y = (x ⊙ s) W = x (diag(s) W),
   * exact, so the engine (which has no such Mul) computes what the graph does.
   */
  const withAwq = (n: NodeProto, read: () => Promise<Float32Array>, inF: number, outF: number): (() => Promise<Float32Array>) => {
    const p = producer.get(n.input[0]!);
    const sName = p && awqMuls.includes(p) ? p.input.find((i) => AWQ_INV.test(i)) : undefined;
    if (!p || !sName) return read;
    folded.add(p);
    return async () => {
      const [W, sc] = [await read(), await floats(inits.get(sName)!)];
      if (sc.length !== inF) throw why(`${sName}: ${sc.length} scales for ${inF} input features`);
      for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) W[i * outF + o]! *= sc[i]!;
      return W;
    };
  };
  for (const n of g.node) {
    if (n.opType === 'Gather' && inits.get(n.input[0]!)?.dims.length === 2) embed = inits.get(n.input[0]!);
    if (n.opType === 'GatherBlockQuantized') embedQ = gatherBlockTable(n, inits, (t) => tensorBytes(t, m.dir), why);
    if (n.opType === 'GroupQueryAttention') checkGqa(n, d, why);
    if (n.opType !== 'MatMul' && n.opType !== 'MatMulNBits') continue;
    const w = inits.get(n.input[1]!);
    if (!w) continue;
    const nbits = n.opType === 'MatMulNBits' ? nbitsWeights(n, inits, (t) => tensorBytes(t, m.dir), why) : undefined;
    const dims = nbits ? nbits.dims : w.dims.map(Number);
    if (/lm_head/.test(n.name) || /lm_head/.test(w.name)) {
      if (dims.join(',') !== `${h},${V}`) missing0.push(`lm_head [${h}, ${V}] (found [${dims.join(', ')}])`);
      else if (nbits || producer.get(n.input[0]!) && awqMuls.includes(producer.get(n.input[0]!)!)) lmHeadNBits = withAwq(n, nbits ? nbits.read : () => floats(w), h, V);
      else lmHead = w;
      continue;
    }
    const hit = PROJ.exec(n.name) ?? PROJ.exec(w.name);
    if (!hit) continue;
    const layer = Number(hit[1]), kind = hit[2]!;
    if (layer >= L) throw why(`${n.name}: layer ${layer} but config.json has ${L} layers`);
    const [inF, outF] = want[kind]!;
    if (dims.join(',') !== `${inF},${outF}`) throw why(`${kind} of layer ${layer} is [${dims.join(', ')}], config.json implies [${inF}, ${outF}]`);
    const add = (consumers.get(n.output[0]!) ?? []).find((c) => c.opType === 'Add');
    const biasName = add?.input.find((i) => i !== n.output[0]);
    const bias = biasName ? inits.get(biasName) : undefined;
    const read = withAwq(n, nbits ? nbits.read : () => floats(w), inF, outF);
    proj[layer]!.set(kind, { w: nbits || folded.has(producer.get(n.input[0]!)!) ? read : w, bias: bias && bias.dims.length === 1 && Number(bias.dims[0]) === outF ? bias : undefined });
  }
  // A fused q|k|v projection stands for the three (its columns are q heads, k heads, v heads).
  for (const p of proj) {
    const f = p.get('qkv_proj');
    if (!f || p.has('q_proj')) continue;
    if (f.bias) throw why('a fused qkv_proj with a bias is not lifted yet');
    const all = async (): Promise<Float32Array> => (typeof f.w === 'function' ? f.w() : floats(f.w));
    const cols = (from: number, n: number) => async (): Promise<Float32Array> => {
      const src = await all(), W = (H + 2 * KV) * d, out = new Float32Array(h * n);
      for (let i = 0; i < h; i++) out.set(src.subarray(i * W + from, i * W + from + n), i * n);
      return out;
    };
    p.set('q_proj', { w: cols(0, H * d) }); p.set('k_proj', { w: cols(H * d, KV * d) }); p.set('v_proj', { w: cols((H + KV) * d, KV * d) });
  }
  // Every AWQ inverse scale must sit in front of projections the engine runs (folded above); anywhere else it would be lost.
  const stray = awqMuls.filter((x) => !folded.has(x) || (consumers.get(x.output[0]!) ?? []).some((c) => c.opType !== 'MatMul' && c.opType !== 'MatMulNBits'));
  if (stray.length) throw why(`AWQ inverse scales the engine cannot fold: ${stray.map((x) => x.name).join(', ')}`);
  const norms = Array.from({ length: L }, () => new Map<string, TensorProto>());
  let finalNorm: TensorProto | undefined;
  for (const [name, t] of inits) {
    const hit = NORM.exec(name);
    if (hit) { norms[Number(hit[1])]?.set(hit[2] ?? hit[3]!, t); continue; }
    if (FINAL_NORM.test(name) && (!/layers\./.test(name) || /final_norm_layernorm/.test(name)) && t.dims.length === 1 && Number(t.dims[0]) === h) finalNorm = t;
  }
  const missing: string[] = [...missing0];
  const qkNorm = norms[0]!.has('q_norm');
  const attnBias = proj[0]!.get('q_proj')?.bias !== undefined;
  for (let l = 0; l < L; l++) {
    for (const k of Object.keys(want)) if (k !== 'qkv_proj' && !proj[l]!.has(k)) missing.push(`layers.${l} ${k}`);
    for (const k of ['input_layernorm', 'post_attention_layernorm', ...(qkNorm ? ['q_norm', 'k_norm'] : [])]) if (!norms[l]!.has(k)) missing.push(`layers.${l} ${k}`);
    if (attnBias) for (const k of ['q_proj', 'k_proj', 'v_proj']) if (!proj[l]!.get(k)?.bias) missing.push(`layers.${l} ${k} bias`);
  }
  if (!finalNorm) missing.push('final norm');
  if (!lmHead && !lmHeadNBits) missing.push('lm_head');
  else if (lmHead && lmHead.dims.map(Number).join(',') !== `${h},${V}`) missing.push(`lm_head [${h}, ${V}] (found [${lmHead.dims.join(', ')}])`);
  const takes = g.input.some((i) => i.name === 'input_ids') ? 'input_ids' : 'inputs_embeds';
  const embedDims = embedQ?.dims ?? embed?.dims.map(Number);
  if (takes === 'input_ids' && embedDims?.join(',') !== `${V},${h}`) missing.push(`embedding table [${V}, ${h}]`);
  if (missing.length) throw why(`not a complete Llama/Qwen decoder: ${missing.length} part(s) missing`, missing.slice(0, 12));
  if ([h, I, H * d].some((k) => k % 32 !== 0)) throw why(`hidden ${h}, intermediate ${I} and heads × head_dim ${H * d} must be multiples of 32`);

  const loadLayer = async (l: number): Promise<DecoderLayerWeights> => {
    const p = proj[l]!, nm = norms[l]!;
    const get = async (k: string) => { const w = p.get(k)!.w; return typeof w === 'function' ? w() : floats(w); };
    const bias = async (k: string) => (attnBias ? floats(p.get(k)!.bias!) : undefined);
    return {
      inputNorm: await floats(nm.get('input_layernorm')!), postNorm: await floats(nm.get('post_attention_layernorm')!),
      q: await get('q_proj'), k: await get('k_proj'), v: await get('v_proj'), o: await get('o_proj'),
      gate: await get('gate_proj'), up: await get('up_proj'), down: await get('down_proj'),
      qBias: await bias('q_proj'), kBias: await bias('k_proj'), vBias: await bias('v_proj'),
      ...(qkNorm ? { qNorm: await floats(nm.get('q_norm')!), kNorm: await floats(nm.get('k_norm')!) } : {}),
    };
  };
  const layers: DecoderLayerWeights[] = [];
  for (let l = 0; l < L; l++) layers.push(await loadLayer(l));
  const shape: DecoderShape = {
    family: cfg.model_type, hidden: h, layers: L, heads: H, kvHeads: KV, headDim: d, intermediate: I, vocab: V,
    rmsEps: cfg.rms_norm_eps, invFreq: invFreq(cfg, d),
  };
  const packBits = typeof bits === 'function' ? bits({ awqFolded: folded.size }) : bits;
  return packDecoder(shape, {
    layers, finalNorm: await floats(finalNorm!), lmHead: lmHeadNBits ? await lmHeadNBits() : await floats(lmHead!),
    ...(takes === 'input_ids' ? { embed: embedQ ? await embedQ.read() : await floats(embed!) } : {}),
  }, packBits);
}

/** GroupQueryAttention as the engine runs it: rotary inside, half-split, global attention, plain softmax scale. */
function checkGqa(n: NodeProto, d: number, why: (m: string) => Error): void {
  const attr = (k: string) => n.attribute.find((a) => a.name === k);
  const int = (k: string, dflt: number) => { const a = attr(k); return a ? Number(a.i) : dflt; };
  const f = (k: string, dflt: number) => attr(k)?.f ?? dflt;
  if (int('do_rotary', 0) !== 1) throw why(`${n.name}: GroupQueryAttention without rotary inside`);
  if (int('rotary_interleaved', 0) !== 0) throw why(`${n.name}: interleaved rotary`);
  if (int('local_window_size', -1) !== -1) throw why(`${n.name}: sliding-window attention`);
  if (f('softcap', 0) !== 0) throw why(`${n.name}: attention softcap`);
  const scale = f('scale', 0);
  if (scale !== 0 && Math.abs(scale - 1 / Math.sqrt(d)) > 1e-6) throw why(`${n.name}: softmax scale ${scale}, the engine uses 1/sqrt(${d})`);
}

/** A MatMulNBits weight (`B` [N, kBlocks, blob], scales, optional zero points) as float [K, N]. */
function nbitsWeights(n: NodeProto, inits: Map<string, TensorProto>, raw: (t: TensorProto) => Promise<Uint8Array>,
  why: (m: string) => Error): { dims: number[]; read: () => Promise<Float32Array> } {
  const attr = (k: string) => Number(n.attribute.find((a) => a.name === k)?.i ?? 0);
  const K = attr('K'), N = attr('N'), bits = attr('bits'), block = attr('block_size');
  if (bits !== 4 && bits !== 8) throw why(`${n.name}: MatMulNBits with ${bits} bits`);
  const B = inits.get(n.input[1]!), S = inits.get(n.input[2]!), Z = n.input[3] ? inits.get(n.input[3]) : undefined;
  if (!B || !S || (n.input[3] && !Z)) throw why(`${n.name}: MatMulNBits whose weights are not initializers`);
  if (Z) throw why(`${n.name}: MatMulNBits with zero points (asymmetric) is not lifted yet`);
  return {
    dims: [K, N],
    read: async () => {
      const kBlocks = Math.ceil(K / block);
      const packed = new Uint8Array(await floatsRaw(B));
      const scales = S.dataType === DT.FLOAT ? new Float32Array(await floatsRaw(S)) : Float32Array.from(new Uint16Array(await floatsRaw(S)), halfToFloat);
      const dq = dequantizeBlocks({ K, N, kBlocks, packed, scales, zeroPoints: new Uint8Array(N * kBlocks).fill(1 << (bits - 1)) }, bits, block);
      return Float32Array.from(dq);
    },
  };
  async function floatsRaw(t: TensorProto): Promise<ArrayBuffer> {
    const b = await raw(t);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }
}

/**
 * A GatherBlockQuantized embedding table (com.microsoft; `data` uint8 [V, H·bits/8] packed along H, `scales`
 * [V, H/block], optional packed `zero_points`, absent meaning 2^(bits−1): src/quantize/formats/gather-block.ts)
 * dequantized to float [V, H], the table the engine keeps in float32.
 */
function gatherBlockTable(n: NodeProto, inits: Map<string, TensorProto>, raw: (t: TensorProto) => Promise<Uint8Array>,
  why: (m: string) => Error): { dims: number[]; read: () => Promise<Float32Array> } {
  const attr = (k: string, dflt: number) => { const a = n.attribute.find((x) => x.name === k); return a ? Number(a.i) : dflt; };
  const bits = attr('bits', 4), block = attr('block_size', 128), gatherAxis = attr('gather_axis', 0), quantAxis = attr('quantize_axis', 1);
  const D = inits.get(n.input[0]!), S = inits.get(n.input[2]!), Z = n.input[3] ? inits.get(n.input[3]) : undefined;
  if (!D || !S || (n.input[3] && !Z)) throw why(`${n.name}: GatherBlockQuantized whose table is not an initializer`);
  if (bits !== 4 && bits !== 8) throw why(`${n.name}: GatherBlockQuantized with ${bits} bits`);
  if (D.dataType !== DT.UINT8 || D.dims.length !== 2 || gatherAxis !== 0 || (quantAxis !== 1 && quantAxis !== -1))
    throw why(`${n.name}: GatherBlockQuantized layout other than uint8 [V, H·bits/8], gather_axis 0, quantize_axis 1`);
  const V = Number(D.dims[0]), H = (Number(D.dims[1]) * 8) / bits, kBlocks = Math.ceil(H / block);
  return {
    dims: [V, H],
    read: async () => {
      const bytes = async (t: TensorProto) => { const b = await raw(t); return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer; };
      const scales = S.dataType === DT.FLOAT ? new Float32Array(await bytes(S)) : Float32Array.from(new Uint16Array(await bytes(S)), halfToFloat);
      const zeroPoints = Z ? unpackZeroPoints(new Uint8Array(await bytes(Z)), V, kBlocks, bits) : new Uint8Array(V * kBlocks).fill(1 << (bits - 1));
      // the table's rows are MatMulNBits' N (V) and its columns K (H): dequantizeBlocks gives [H, V]
      const hv = dequantizeBlocks({ K: H, N: V, kBlocks, packed: new Uint8Array(await bytes(D)), scales, zeroPoints }, bits, block);
      const out = new Float32Array(V * H);
      for (let k = 0; k < H; k++) for (let v = 0; v < V; v++) out[v * H + k] = hv[k * V + v]!;
      return out;
    },
  };
}

/** One layer's float weights as exported: projections `[in, out]`, norms and biases 1-D. */
export interface DecoderLayerWeights {
  readonly inputNorm: Float32Array; readonly postNorm: Float32Array;
  readonly q: Float32Array; readonly k: Float32Array; readonly v: Float32Array; readonly o: Float32Array;
  readonly gate: Float32Array; readonly up: Float32Array; readonly down: Float32Array;
  readonly qBias?: Float32Array; readonly kBias?: Float32Array; readonly vBias?: Float32Array;
  readonly qNorm?: Float32Array; readonly kNorm?: Float32Array;
}
export interface DecoderWeights {
  readonly layers: readonly DecoderLayerWeights[];
  readonly finalNorm: Float32Array;
  /** [hidden, vocab] */
  readonly lmHead: Float32Array;
  /** [vocab, hidden]; present when the brick takes input_ids. */
  readonly embed?: Float32Array;
}
export interface DecoderShape {
  readonly family: string; readonly hidden: number; readonly layers: number; readonly heads: number; readonly kvHeads: number;
  readonly headDim: number; readonly intermediate: number; readonly vocab: number; readonly rmsEps: number; readonly invFreq: readonly number[];
}

/** Packs float decoder weights in the engine's order (64-byte aligned tensors, projections quantized by rows). */
export function packDecoder(sh: DecoderShape, w: DecoderWeights, bits: NativeBits): LiftResult {
  const { hidden: h, heads: H, headDim: d, intermediate: I } = sh;
  const qkNorm = w.layers[0]?.qNorm !== undefined, attnBias = w.layers[0]?.qBias !== undefined;
  const parts: Uint8Array[] = [];
  let at = 0;
  const push = (b: Uint8Array): number => {
    const pad = (64 - (at % 64)) % 64;
    if (pad) parts.push(new Uint8Array(pad));
    at += pad;
    const off = at;
    parts.push(b);
    at += b.byteLength;
    return off;
  };
  const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  /** [in, out] float weights (concatenated along out) → rows [out][in], quantized. */
  const rows = (ts: Float32Array[], inF: number): Uint8Array => {
    const n = ts.reduce((a, t) => a + t.length / inF, 0);
    const m = new Float32Array(n * inF);
    let r0 = 0;
    for (const t of ts) {
      const out = t.length / inF;
      for (let i = 0; i < inF; i++) for (let o = 0; o < out; o++) m[(r0 + o) * inF + i] = t[i * out + o]!;
      r0 += out;
    }
    return quantizeRows(bits, m, n, inF);
  };
  const offsets: number[] = [];
  for (const p of w.layers) {
    const o: Record<LayerTensor, number> = { attn_norm: -1, q_norm: -1, k_norm: -1, wqkv: -1, bqkv: -1, wo: -1, ffn_norm: -1, wgu: -1, wdown: -1 };
    o.attn_norm = push(f32(p.inputNorm));
    if (qkNorm) { o.q_norm = push(f32(p.qNorm!)); o.k_norm = push(f32(p.kNorm!)); }
    o.wqkv = push(rows([p.q, p.k, p.v], h));
    if (attnBias) {
      const b = new Float32Array(p.qBias!.length + p.kBias!.length + p.vBias!.length);
      b.set(p.qBias!); b.set(p.kBias!, p.qBias!.length); b.set(p.vBias!, p.qBias!.length + p.kBias!.length);
      o.bqkv = push(f32(b));
    }
    o.wo = push(rows([p.o], H * d));
    o.ffn_norm = push(f32(p.postNorm));
    o.wgu = push(rows([p.gate, p.up], h));
    o.wdown = push(rows([p.down], I));
    offsets.push(...LAYER_TENSORS.map((k) => o[k]));
  }
  offsets.push(push(f32(w.finalNorm)));
  offsets.push(push(rows([w.lmHead], h)));
  const embedOffset = w.embed ? push(f32(w.embed)) : -1;
  const weights = new Uint8Array(at);
  let k = 0;
  for (const p of parts) { weights.set(p, k); k += p.byteLength; }
  const config: NativeConfig = {
    formatVersion: NATIVE_FORMAT_VERSION, family: sh.family, bits, hidden: h, layers: sh.layers, heads: H, kvHeads: sh.kvHeads, headDim: d,
    intermediate: I, vocab: sh.vocab, rmsEps: sh.rmsEps, qkNorm, attnBias, invFreq: [...sh.invFreq], takes: w.embed ? 'input_ids' : 'inputs_embeds',
    embedOffset, offsets, bytes: weights.byteLength, sha256: createHash('sha256').update(weights).digest('hex'),
  };
  return { config, weights };
}

/** Writes `<brick>.nmq` and `<brick>.native.json` next to the brick file. */
export async function writeNative(dir: string, brick: string, r: LiftResult): Promise<{ config: string; weights: string }> {
  const files = { config: `${brick}.native.json`, weights: `${brick}.nmq` };
  await writeFile(join(dir, files.weights), r.weights);
  await writeFile(join(dir, files.config), `${JSON.stringify({ ...r.config, weightsFile: files.weights }, null, 2)}\n`);
  return files;
}
