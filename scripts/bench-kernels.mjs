#!/usr/bin/env node
// Benchmark (not a test): decode and prefill speed of the native kernels vs onnxruntime-node's MatMulNBits
// on the same random Qwen2-0.5B-shaped weights, in one process, engines interleaved (`npm run bench:kernels`).
//
//   node scripts/bench-kernels.mjs [--threads 2] [--runs 3] [--prompt 32] [--new 64] [--layers 24] [--bits 4]
//
// Weights: one seeded float model (hidden 896, 24 layers, 14 heads, 2 KV heads, head_dim 64, intermediate 4864,
// vocab 151936, tied embeddings; no q/k/v bias), then
// - native: packed Q4 (or --bits 8) block 32, fp16 scales (src/compile/native/lift.ts packDecoder);
// - ORT: onnxruntime-genai builder layout (GroupQueryAttention, SimplifiedLayerNormalization), MatMulNBits 4-bit
//   symmetric, block 32 and block 128, accuracy_level 4 (src/fixtures/gqa-decoder.ts).
// Both quantize the same floats (round to nearest; the scale rules differ slightly), so the weight bytes per
// token match for block 32. Embedding lookup is outside the timed native step and inside ORT's graph (a Gather).
// Each run: prefill --prompt tokens, then --new greedy steps; decode tok/s = (new - 1) / time after the first
// token. Medians over --runs; the load average is printed because the machine is shared.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

process.env.ORT_DISABLE_TELEMETRY = '1';
const dist = join(new URL('.', import.meta.url).pathname, '..', 'dist');
const { values: a } = parseArgs({ options: {
  threads: { type: 'string', default: '2' }, runs: { type: 'string', default: '3' }, prompt: { type: 'string', default: '32' },
  new: { type: 'string', default: '64' }, layers: { type: 'string', default: '24' }, bits: { type: 'string', default: '4' },
  json: { type: 'boolean', default: false },
} });
const threads = Number(a.threads), runs = Number(a.runs), P = Number(a.prompt), N = Number(a.new), bits = Number(a.bits);
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const k = s.length >> 1; return s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2; };
const argmax = (v) => { let b = 0; for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i; return b; };
const log = (...x) => { if (!a.json) console.error(...x); };

const { gqaParams, gqaDecoderModel } = await import(join(dist, 'fixtures', 'index.js'));
const { packDecoder, invFreq } = await import(join(dist, 'compile', 'native', 'lift.js'));
const { loadKernels } = await import(join(dist, 'run', 'backends', 'native', 'addon.js'));
const { saveModel } = await import(join(dist, 'onnx', 'model-io.js'));
const ort = (await import('onnxruntime-node')).default;

const dims = {
  layout: 'genai', hidden: 896, layers: Number(a.layers), heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864, vocab: 151936,
  maxPositions: 1024, rmsEps: 1e-6, ropeTheta: 1000000, tieEmbeddings: true, slidingWindow: -1, qkNorm: false, fusedQkv: false,
  attnScale: 1 / 8, act: 'silu',
};
const t0 = performance.now();
log('generating float weights …');
const params = gqaParams('qwen3', 7, 1, 0.05, dims);
const root = mkdtempSync(join(tmpdir(), 'nanomind-bench-kernels-'));
const engines = [];
try {
  const k = loadKernels();
  if (!k.ok) throw new Error(k.reason);
  log('packing native …');
  const packed = packDecoder({ family: 'qwen2', hidden: 896, layers: dims.layers, heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864,
    vocab: dims.vocab, rmsEps: dims.rmsEps, invFreq: invFreq({ rope_theta: dims.ropeTheta }, 64) },
  { layers: params.layers, finalNorm: params.finalNorm, lmHead: params.lmHead }, bits);
  const c = packed.config;
  const model = k.kernels.create({ hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
    intermediate: c.intermediate, vocab: c.vocab, maxContext: P + N + 8, threads, bits, qkNorm: 0, attnBias: 0, rmsEps: c.rmsEps },
  packed.weights, Float64Array.from(c.offsets), Float32Array.from(c.invFreq));
  const nativeMB = (packed.weights.byteLength - 2 * 896 * 4 * dims.layers) / 1e6;
  const logits = new Float32Array(c.vocab);
  const embed = (ids) => { const e = new Float32Array(ids.length * 896); ids.forEach((id, i) => e.set(params.embed.subarray(id * 896, (id + 1) * 896), i * 896)); return e; };
  engines.push({ name: `native Q${bits} block 32 (${k.kernels.simd()})`, mb: nativeMB, async run(prompt, n) {
    const out = []; let pos = 0;
    const ts = performance.now();
    k.kernels.forward(model, embed(prompt), prompt.length, 0, logits, false); pos = prompt.length;
    out.push(argmax(logits));
    const tf = performance.now();
    for (let i = 1; i < n; i++) { k.kernels.forward(model, embed([out.at(-1)]), 1, pos++, logits, false); out.push(argmax(logits)); }
    return { ttft: tf - ts, decode: performance.now() - tf, out };
  } });
  for (const block of [32, 128]) {
    log(`building ORT MatMulNBits block ${block} …`);
    const file = join(root, `q4-b${block}.onnx`);
    const m = gqaDecoderModel(params, 'q4', { bits: 4, block, symmetric: true, accuracyLevel: 4 }).model({ opset: 21, msOpset: 1, producer: 'onnxruntime-genai' });
    m.irVersion = 10n;
    await saveModel(m, file, { externalThreshold: 1024 });
    const s = await ort.InferenceSession.create(file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
    const mb = (dims.layers * (896 * (896 + 2 * 128) + 896 * 896 + 3 * 896 * 4864) + 896 * dims.vocab) * (0.5 + 4 / block) / 1e6;
    engines.push({ name: `ORT MatMulNBits 4-bit block ${block}, acc 4`, mb, async run(prompt, n) {
      const kv = {};
      for (let l = 0; l < dims.layers; l++) for (const x of ['key', 'value']) kv[`past_key_values.${l}.${x}`] = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 64]);
      const out = []; let ids = prompt, total = 0;
      const ts = performance.now(); let tf = 0;
      for (let i = 0; i < n; i++) {
        total += ids.length;
        const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]), ...kv });
        for (let l = 0; l < dims.layers; l++) for (const x of ['key', 'value']) kv[`past_key_values.${l}.${x}`] = r[`present.${l}.${x}`];
        const lg = r.logits.data; out.push(argmax(lg.subarray(lg.length - dims.vocab)));
        if (i === 0) tf = performance.now();
        ids = [out.at(-1)];
      }
      return { ttft: tf - ts, decode: performance.now() - tf, out };
    } });
  }
  log(`setup ${((performance.now() - t0) / 1000).toFixed(0)} s; running ${runs} round(s) of ${engines.length} engines, ${threads} thread(s)`);
  const prompt = Array.from({ length: P }, (_, i) => (7 * i + 3) % 1000);
  const res = engines.map(() => ({ dec: [], pre: [], out: undefined }));
  for (const e of engines) await e.run(prompt.slice(0, 4), 4); // warm-up
  const load0 = loadavg()[0];
  for (let r = 0; r < runs; r++)
    for (const [i, e] of engines.entries()) {
      const x = await e.run(prompt, N);
      res[i].dec.push(((N - 1) * 1000) / x.decode); res[i].pre.push((P * 1000) / x.ttft); res[i].out = x.out;
    }
  const rows = engines.map((e, i) => ({ engine: e.name, decodeTokPerS: median(res[i].dec), prefillTokPerS: median(res[i].pre), weightMBPerToken: e.mb }));
  const agree = res.slice(1).map((r) => r.out.filter((t, j) => t === res[0].out[j]).length);
  const summary = { machine: `${cpus()[0]?.model} × ${cpus().length}`, threads, prompt: P, newTokens: N, runs, loadavg1: [load0, loadavg()[0]], rows, greedyAgreementWithNative: agree };
  if (a.json) console.log(JSON.stringify(summary, null, 2));
  else {
    console.log(`${summary.machine}; ${threads} thread(s); prompt ${P}, ${N} new tokens; median of ${runs}; load average (1 min) ${load0.toFixed(2)} → ${loadavg()[0].toFixed(2)}`);
    console.log('| engine | decode tok/s | prefill tok/s | weight MB/token |\n|---|---:|---:|---:|');
    for (const r of rows) console.log(`| ${r.engine} | ${r.decodeTokPerS.toFixed(1)} | ${r.prefillTokPerS.toFixed(0)} | ${r.weightMBPerToken.toFixed(0)} |`);
    console.log(`decode ratio native / ORT block 32: ${(rows[0].decodeTokPerS / rows[1].decodeTokPerS).toFixed(2)}, / ORT block 128: ${(rows[0].decodeTokPerS / rows[2].decodeTokPerS).toFixed(2)}`);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
