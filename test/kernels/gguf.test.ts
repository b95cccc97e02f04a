// The GGUF writer (src/compile/native/gguf.ts) on a tiny Qwen2-shaped decoder with q/k/v biases.
// Oracles:
// 1. A GGUF reader written here from ggml's docs/gguf.md (shares no code with the writer): header, KV metadata,
//    tensor table, alignment; every quantized tensor is dequantized here with ggml's Q4_0 / Q8_0 rule and compared
//    in float64 with the ORIGINAL float weights (HF [in, out] layout, so the row split and transposition are
//    checked too): the error per weight is at most half a step (Q8_0), one step for Q4_0 (its clamp at +7).
// 2. llama.cpp itself (node-llama-cpp 3.21.1, installed on demand by `npm run bench:engines -- --install-peer`
//    under ~/.cache/nanomind/bench): it loads the file, and its next-token probabilities for every prompt
//    position match the native engine's softmax on the same bytes. Both quantize activations to int8 per block
//    of 32; llama.cpp keeps its KV cache (and q in K·q) in fp16 and its activation scales in fp16. Tolerance: the
//    same argmax at every position, and log-probabilities of the likely tokens (p > 1e-4 on either side) within
//    2 % of the native row's logit spread.
//    Skipped (with the reason) when the peer is not installed.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGguf, writeGguf } from '../../src/compile/native/gguf.js';
import { invFreq, packDecoder } from '../../src/compile/native/lift.js';
import { gqaParams, type GqaDims } from '../../src/fixtures/gqa-decoder.js';
import { halfToFloat } from '../../src/onnx/dtype.js';
import { loadKernels } from '../../src/run/backends/native/addon.js';
import type { NativeBits } from '../../src/formats/native-weights.js';

const dims: GqaDims = {
  layout: 'genai', hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, vocab: 320,
  maxPositions: 128, rmsEps: 1e-6, ropeTheta: 1000000, tieEmbeddings: true, slidingWindow: -1, qkNorm: false, fusedQkv: false,
  attnScale: 1 / 4, act: 'silu',
};
const THETA = 1000000;

/** Seeded float model + random q/k/v biases (Qwen2 has them), packed as the native engine holds it. */
function model(bits: NativeBits) {
  const p = gqaParams('qwen3', 11, 1, 0.5, dims);
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.2;
  const layers = p.layers.map((l) => ({ ...l, qBias: Float32Array.from({ length: 64 }, rnd), kBias: Float32Array.from({ length: 32 }, rnd), vBias: Float32Array.from({ length: 32 }, rnd) }));
  const packed = packDecoder({ family: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, vocab: 320,
    rmsEps: 1e-6, invFreq: invFreq({ rope_theta: THETA } as never, 16) }, { layers, finalNorm: p.finalNorm, lmHead: p.lmHead }, bits);
  return { p, layers, packed };
}

// ---------------------------------------------------------------------------------------- test-side reader
interface Tensor { name: string; ne: number[]; type: number; offset: number }
function readGguf(b: Uint8Array) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 0;
  const u32 = () => { const v = dv.getUint32(at, true); at += 4; return v; };
  const u64 = () => { const v = Number(dv.getBigUint64(at, true)); at += 8; return v; };
  const str = () => { const n = u64(); const s = new TextDecoder().decode(b.subarray(at, at + n)); at += n; return s; };
  const val = (t: number): unknown => {
    switch (t) {
      case 4: return u32();
      case 5: { const v = dv.getInt32(at, true); at += 4; return v; }
      case 6: { const v = dv.getFloat32(at, true); at += 4; return v; }
      case 7: return b[at++] === 1;
      case 8: return str();
      case 9: { const et = u32(), n = u64(); return Array.from({ length: n }, () => val(et)); }
      default: throw new Error(`unexpected gguf type ${t}`);
    }
  };
  const magic = new TextDecoder().decode(b.subarray(0, 4)); at = 4;
  const version = u32(), nt = u64(), nkv = u64();
  const kv = new Map<string, unknown>();
  for (let i = 0; i < nkv; i++) { const k = str(); kv.set(k, val(u32())); }
  const tensors: Tensor[] = [];
  for (let i = 0; i < nt; i++) {
    const name = str(), nd = u32();
    const ne = Array.from({ length: nd }, u64);
    tensors.push({ name, ne, type: u32(), offset: u64() });
  }
  const align = (kv.get('general.alignment') as number | undefined) ?? 32;
  const dataStart = Math.ceil(at / align) * align;
  return { magic, version, kv, tensors, dataStart, align };
}

/** ggml dequantize_row_q4_0 / q8_0 / f32 in float64: rows of ne[0]. */
function dequant(b: Uint8Array, t: Tensor, start: number): Float64Array {
  const n = t.ne.reduce((a, x) => a * x, 1);
  const out = new Float64Array(n);
  const dv = new DataView(b.buffer, b.byteOffset + start + t.offset);
  if (t.type === 0) { for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true); return out; }
  const bs = t.type === 2 ? 18 : 34;
  for (let blk = 0; blk < n / 32; blk++) {
    const d = halfToFloat(dv.getUint16(blk * bs, true));
    for (let j = 0; j < 32; j++) {
      if (t.type === 8) out[blk * 32 + j] = dv.getInt8(blk * bs + 2 + j) * d;
      else {
        const q = dv.getUint8(blk * bs + 2 + (j % 16));
        out[blk * 32 + j] = ((j < 16 ? q & 15 : q >> 4) - 8) * d;
      }
    }
  }
  return out;
}

describe('GGUF writer', () => {
  for (const bits of [4, 8] as NativeBits[])
    it(`Q${bits}: header, metadata and every tensor read back by a spec reader, weights within a quantization step of the floats`, async () => {
      const { p, layers, packed } = model(bits);
      const dir = await mkdtemp(join(tmpdir(), 'nm-gguf-'));
      const file = join(dir, 'm.gguf');
      const size = await writeGguf(file, packed.config, packed.weights, { contextLength: 128, ropeTheta: THETA });
      const b = new Uint8Array(await readFile(file));
      await rm(dir, { recursive: true, force: true });
      expect(b.byteLength).toBe(size);
      const g = readGguf(b);
      expect([g.magic, g.version, g.align]).toEqual(['GGUF', 3, 32]);
      const kv = Object.fromEntries(g.kv);
      expect(kv).toMatchObject({
        'general.architecture': 'qwen2', 'general.file_type': bits === 4 ? 2 : 7, 'qwen2.embedding_length': 64, 'qwen2.block_count': 2,
        'qwen2.feed_forward_length': 96, 'qwen2.attention.head_count': 4, 'qwen2.attention.head_count_kv': 2, 'qwen2.context_length': 128,
        'qwen2.rope.freq_base': THETA, 'tokenizer.ggml.model': 'gpt2',
      });
      expect(kv['qwen2.attention.layer_norm_rms_epsilon']).toBeCloseTo(1e-6, 12);
      const toks = kv['tokenizer.ggml.tokens'] as string[];
      expect(toks.length).toBe(320);
      expect(new Set(toks).size).toBe(320);
      expect((kv['tokenizer.ggml.token_type'] as number[]).length).toBe(320);
      // 1 + 1 + 12 per layer (no output.weight: tied), data section aligned, tensors inside the file
      expect(g.tensors.length).toBe(2 + 12 * 2);
      expect(g.dataStart % 32).toBe(0);
      for (const t of g.tensors) expect(t.offset % 32).toBe(0);
      const byName = new Map(g.tensors.map((t) => [t.name, t]));
      const check = (name: string, ne: number[], want: (row: number, col: number) => number) => {
        const t = byName.get(name)!;
        expect(t.ne, name).toEqual(ne);
        expect(t.type, name).toBe(ne.length === 1 ? 0 : bits === 4 ? 2 : 8);
        const got = dequant(b, t, g.dataStart);
        const rows = ne[1] ?? 1, cols = ne[0]!;
        let worst = 0;
        for (let r = 0; r < rows; r++)
          for (let blk = 0; blk < cols / 32; blk++) {
            let amax = 0;
            for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(want(r, blk * 32 + j)));
            // a step is amax/8 (Q4_0) or amax/127 (Q8_0); half a step plus fp16 scale rounding
            // Q4_0 maps the largest magnitude to -8, so the other sign clamps at +7: up to one step there
            const slack = ne.length === 1 ? 0 : bits === 4 ? amax / 8 : amax / 127 / 2;
            for (let j = 0; j < 32; j++) {
              const c = blk * 32 + j, e = Math.abs(got[r * cols + c]! - want(r, c));
              worst = Math.max(worst, e - (slack + amax * 2e-3));
            }
          }
        expect(worst, name).toBeLessThanOrEqual(1e-6);
      };
      // HF layout [in, out]: ggml ne = [in, out], element (row = out o, col = in i) = W[i * out + o]
      const hf = (w: Float32Array, out: number) => (o: number, i: number) => w[i * out + o]!;
      check('token_embd.weight', [64, 320], hf(p.lmHead, 320));
      check('output_norm.weight', [64], (_, i) => p.finalNorm[i]!);
      for (const [l, L] of layers.entries()) {
        check(`blk.${l}.attn_q.weight`, [64, 64], hf(L.q, 64));
        check(`blk.${l}.attn_k.weight`, [64, 32], hf(L.k, 32));
        check(`blk.${l}.attn_v.weight`, [64, 32], hf(L.v, 32));
        check(`blk.${l}.attn_output.weight`, [64, 64], hf(L.o, 64));
        check(`blk.${l}.ffn_gate.weight`, [64, 96], hf(L.gate, 96));
        check(`blk.${l}.ffn_up.weight`, [64, 96], hf(L.up, 96));
        check(`blk.${l}.ffn_down.weight`, [96, 64], hf(L.down, 64));
        check(`blk.${l}.attn_q.bias`, [64], (_, i) => L.qBias[i]!);
        check(`blk.${l}.attn_k.bias`, [32], (_, i) => L.kBias[i]!);
        check(`blk.${l}.attn_v.bias`, [32], (_, i) => L.vBias[i]!);
        check(`blk.${l}.attn_norm.weight`, [64], (_, i) => L.inputNorm[i]!);
        check(`blk.${l}.ffn_norm.weight`, [64], (_, i) => L.postNorm[i]!);
      }
    });

  it('refuses what llama.cpp\'s qwen2 cannot express (scaled rotary, q/k norms)', () => {
    const { packed } = model(4);
    expect(() => buildGguf(packed.config, packed.weights, { contextLength: 128, ropeTheta: 10000 })).toThrow(expect.objectContaining({ code: 'E_GGUF_UNSUPPORTED' }));
    expect(() => buildGguf({ ...packed.config, qkNorm: true }, packed.weights, { contextLength: 128, ropeTheta: THETA })).toThrow(expect.objectContaining({ code: 'E_GGUF_UNSUPPORTED' }));
  });
});

const PEER = join(homedir(), '.cache', 'nanomind', 'bench', 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
const peerWhy = existsSync(PEER) ? undefined : `node-llama-cpp is not installed in ${PEER} (run \`npm run bench:engines -- --install-peer\`)`;
const kernels = loadKernels();

describe.skipIf(peerWhy !== undefined || !kernels.ok)(`llama.cpp runs the GGUF${peerWhy ? ` — skipped: ${peerWhy}` : ''}`, () => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let llama: any;
  beforeAll(async () => {
    const { getLlama } = await import(PEER);
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
  }, 60_000);
  afterAll(async () => { await llama?.dispose(); });

  for (const bits of [4, 8] as NativeBits[])
    it(`Q${bits}: next-token probabilities at every prompt position match the native engine on the same bytes`, async () => {
      if (!kernels.ok) throw new Error(kernels.reason);
      const { packed } = model(bits);
      const dir = await mkdtemp(join(tmpdir(), 'nm-gguf-llama-'));
      const file = join(dir, 'm.gguf');
      await writeGguf(file, packed.config, packed.weights, { contextLength: 128, ropeTheta: THETA });
      const g = readGguf(new Uint8Array(await readFile(file)));
      const emb = dequant(new Uint8Array(await readFile(file)), g.tensors.find((t) => t.name === 'token_embd.weight')!, g.dataStart);
      const prompt = [5, 17, 42, 99, 211, 7, 250, 3, 64, 128, 300, 1];
      const m = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
      const ctx = await m.createContext({ contextSize: 128, batchSize: 64, threads: 1, flashAttention: false });
      const seq = ctx.getSequence();
      const res = await seq.controlledEvaluate(prompt.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]));
      await ctx.dispose(); await m.dispose();
      await rm(dir, { recursive: true, force: true });

      const c = packed.config;
      const k = kernels.kernels;
      const nm = k.create({ hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, vocab: 320, maxContext: 64, threads: 1,
        bits, qkNorm: 0, attnBias: 1, rmsEps: c.rmsEps }, packed.weights, Float64Array.from(c.offsets), Float32Array.from(c.invFreq));
      // llama.cpp looks tokens up in the quantized token_embd; give the engine the same (dequantized) rows
      const embeds = new Float32Array(prompt.length * 64);
      prompt.forEach((id, r) => { for (let i = 0; i < 64; i++) embeds[r * 64 + i] = emb[id * 64 + i]!; });
      const logits = new Float32Array(prompt.length * 320);
      k.forward(nm, embeds, prompt.length, 0, logits, true);
      // llama.cpp gives probabilities; compare log-probabilities (logits up to a constant) over the tokens either side
      // finds likely (p > 1e-4), relative to the spread of the native row's logits, as test/kernels/oracle.test.ts does.
      let worst = 0;
      for (let r = 0; r < prompt.length; r++) {
        const row = logits.subarray(r * 320, (r + 1) * 320);
        const mx = Math.max(...row), mn = Math.min(...row);
        let z = 0; for (const v of row) z += Math.exp(v - mx);
        const lz = mx + Math.log(z);
        const probs = res[r]?.next?.probabilities as Map<number, number>;
        expect(probs.size).toBe(320);
        for (let t = 0; t < 320; t++) {
          const pn = Math.exp(row[t]! - lz), pl = probs.get(t)!;
          if (pn < 1e-4 && pl < 1e-4) continue;
          worst = Math.max(worst, Math.abs(row[t]! - lz - Math.log(pl)) / (mx - mn));
        }
        expect([...probs.keys()][0], `position ${r}`).toBe(row.indexOf(mx));
      }
      expect(worst).toBeLessThan(0.02); // seen: 0.9 % (Q4), 0.7 % (Q8)
    }, 60_000);
});
