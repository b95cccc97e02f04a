#!/usr/bin/env node
// Benchmark (not a test): decode and prefill speed, peak RSS and share of measured read bandwidth of
//   - nanomind native Q4 (or --bits 8) block 32, fp16 scales (kernels/, packed by src/compile/native/lift.ts),
//   - onnxruntime-node MatMulNBits 4-bit symmetric, block 32 and block 128, accuracy_level 4 (src/fixtures/gqa-decoder.ts),
//   - llama.cpp Q4_0 (Q8_0 with --bits 8) through node-llama-cpp 3.21.1, reading the native engine's very bytes as
//     GGUF (src/compile/native/gguf.ts),
// on the same seeded Qwen2-0.5B-shaped float weights (hidden 896, 24 layers, 14 heads, 2 KV heads, head_dim 64,
// intermediate 4864, vocab 151936, tied embeddings, no q/k/v bias).
//
//   npm run bench:engines -- [--threads 1,2] [--runs 3] [--prompt 32] [--new 64] [--layers 24] [--bits 4]
//                             [--engines native,ort32,ort128,llama] [--json | --markdown]
//   npm run bench:engines -- --install-peer      # only install node-llama-cpp into the cache and exit
//
// How it is fair: every measurement is its own child process (one engine, one thread count, one run), so peak RSS
// is that engine's alone; runs go round-robin over engines and thread counts (interleaved), and the table shows
// medians with min–max. All engines get the same thread count (llama.cpp: threads = threads_batch), children run
// with UV_THREADPOOL_SIZE=1. Each child warms up (4-token prompt, 4 steps) before its timed run: prefill --prompt
// tokens (prefill tok/s = prompt / time to the first token), then --new greedy steps (decode tok/s = (new - 1) /
// time after the first token). Token embeddings: llama.cpp looks rows up in the Q4_0 token_embd; the native child
// dequantizes the same packed lm_head row (tied), outside its timed forward; ORT gathers in-graph.
// Read bandwidth: the engine's own C probe (kernels: AVX2 loads summing a 1 GB buffer on the engine's thread pool,
// best of 5 passes), measured per thread count in every round; share = decode tok/s × weight MB per token / GB/s.
// The machine is shared: the 1-minute load average is printed before and after, and each row also gives the CPU
// time the engine's process spent per token (all its threads, spinning included): on a contended machine wall-clock
// tok/s mostly measures the wait for a core, while CPU ms/token at 1 thread measures the engine's own work.
//
// node-llama-cpp is not a package.json dependency (its optional dependencies pull CUDA/Vulkan binaries into every
// `npm ci`): it is installed on first use into ~/.cache/nanomind/bench with --omit=optional plus the linux-x64 CPU
// prebuilt, and loaded with build: 'never' (no download, no compile; if the prebuilt does not load, llama.cpp is
// left out and the reason printed).
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

process.env.ORT_DISABLE_TELEMETRY = '1';
const SELF = fileURLToPath(import.meta.url);
const dist = join(dirname(SELF), '..', 'dist');
const PEER_VERSION = '3.21.1';
const PEER_DIR = join(homedir(), '.cache', 'nanomind', 'bench');
const PEER_ENTRY = join(PEER_DIR, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
const H = 896, HEADS = 14, KVH = 2, HD = 64, INTER = 4864, VOCAB = 151936, THETA = 1000000;

const { values: a } = parseArgs({ options: {
  threads: { type: 'string', default: '1,2' }, runs: { type: 'string', default: '3' }, prompt: { type: 'string', default: '32' },
  new: { type: 'string', default: '64' }, layers: { type: 'string', default: '24' }, bits: { type: 'string', default: '4' },
  engines: { type: 'string', default: 'native,ort32,ort128,llama' }, json: { type: 'boolean', default: false },
  markdown: { type: 'boolean', default: false },
  'install-peer': { type: 'boolean', default: false },
  // internal: one measurement / the setup, in a child process
  child: { type: 'string' }, dir: { type: 'string' }, setup: { type: 'boolean', default: false },
} });
const P = Number(a.prompt), N = Number(a.new), layers = Number(a.layers), bits = Number(a.bits);
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const k = s.length >> 1; return s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2; };
const argmax = (v) => { let b = 0; for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i; return b; };
const log = (...x) => { if (!a.json) console.error(...x); };
/** Wall clock and this process's CPU time (all threads, user + system), in ms. */
const mark = () => { const c = process.cpuUsage(); return { t: performance.now(), c: (c.user + c.system) / 1000 }; };
/** ttft / decode wall ms and CPU ms from three marks: start, first token, end. */
const span = (m0, m1, m2, out) => ({ ttft: m1.t - m0.t, decode: m2.t - m1.t, ttftCpu: m1.c - m0.c, decodeCpu: m2.c - m1.c, out });
const promptIds = Array.from({ length: P }, (_, i) => (7 * i + 3) % 1000);

// ------------------------------------------------------------------------------------------------ peer install
function peerInstalled() { return existsSync(PEER_ENTRY); }
function installPeer() {
  mkdirSync(PEER_DIR, { recursive: true });
  if (!existsSync(join(PEER_DIR, 'package.json'))) writeFileSync(join(PEER_DIR, 'package.json'), '{"name":"nanomind-bench-peers","private":true}\n');
  console.error(`installing node-llama-cpp ${PEER_VERSION} (CPU prebuilt only, no optional GPU packages) into ${PEER_DIR} …`);
  const r = spawnSync('npm', ['install', '--no-save', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund',
    `node-llama-cpp@${PEER_VERSION}`, `@node-llama-cpp/linux-x64@${PEER_VERSION}`], { cwd: PEER_DIR, stdio: 'inherit' });
  if (r.status !== 0 || !peerInstalled()) return `npm install in ${PEER_DIR} failed (exit ${r.status})`;
  return undefined;
}

// ------------------------------------------------------------------------------------------------ setup (child)
/** Writes native.json + decoder.nmq, q4-b32.onnx, q4-b128.onnx and model.gguf into --dir from one float model. */
async function setup(dir) {
  const { gqaParams, gqaDecoderModel } = await import(join(dist, 'fixtures', 'index.js'));
  const { packDecoder, invFreq } = await import(join(dist, 'compile', 'native', 'lift.js'));
  const { writeGguf } = await import(join(dist, 'compile', 'native', 'gguf.js'));
  const { saveModel } = await import(join(dist, 'onnx', 'model-io.js'));
  const dims = { layout: 'genai', hidden: H, layers, heads: HEADS, kvHeads: KVH, headDim: HD, intermediate: INTER, vocab: VOCAB,
    maxPositions: 1024, rmsEps: 1e-6, ropeTheta: THETA, tieEmbeddings: true, slidingWindow: -1, qkNorm: false, fusedQkv: false,
    attnScale: 1 / 8, act: 'silu' };
  const params = gqaParams('qwen3', 7, 1, 0.05, dims);
  const packed = packDecoder({ family: 'qwen2', hidden: H, layers, heads: HEADS, kvHeads: KVH, headDim: HD, intermediate: INTER,
    vocab: VOCAB, rmsEps: 1e-6, invFreq: invFreq({ rope_theta: THETA }, HD) },
  { layers: params.layers, finalNorm: params.finalNorm, lmHead: params.lmHead }, bits);
  writeFileSync(join(dir, 'decoder.nmq'), packed.weights);
  writeFileSync(join(dir, 'native.json'), JSON.stringify(packed.config));
  await writeGguf(join(dir, 'model.gguf'), packed.config, packed.weights, { contextLength: 4096, ropeTheta: THETA, name: 'nanomind bench qwen2-0.5b-shape' });
  for (const block of [32, 128]) {
    const m = gqaDecoderModel(params, 'q4', { bits: 4, block, symmetric: true, accuracyLevel: 4 }).model({ opset: 21, msOpset: 1, producer: 'onnxruntime-genai' });
    m.irVersion = 10n;
    await saveModel(m, join(dir, `q4-b${block}.onnx`), { externalThreshold: 1024 });
  }
}

// ------------------------------------------------------------------------------------------ measurements (child)
/** One engine: load, warm up, one timed run; returns timings, greedy tokens and memory. */
async function measure(engine, dir, threads) {
  const run = await open(engine, dir, threads);
  await run(promptIds.slice(0, 4), 4);
  const x = await run(promptIds, N);
  const ru = process.resourceUsage();
  return { engine, threads, decodeTokPerS: ((N - 1) * 1000) / x.decode, prefillTokPerS: (P * 1000) / x.ttft, peakRssMB: ru.maxRSS / 1024,
    decodeCpuMsPerTok: x.decodeCpu / (N - 1), prefillCpuMsPerTok: x.ttftCpu / P,
    rssAfterMB: process.memoryUsage().rss / 1e6, tokens: x.out, simd: run.simd };
}

async function open(engine, dir, threads) {
  if (engine === 'native') {
    const { loadKernels } = await import(join(dist, 'run', 'backends', 'native', 'addon.js'));
    const { rowBytes } = await import(join(dist, 'formats', 'native-weights.js'));
    const { halfToFloat } = await import(join(dist, 'onnx', 'dtype.js'));
    const k = loadKernels();
    if (!k.ok) throw new Error(k.reason);
    const c = JSON.parse(readFileSync(join(dir, 'native.json'), 'utf8'));
    const file = join(dir, 'decoder.nmq');
    // as the runtime does (src/run/backends/native/native.ts): the engine reads the file into its own memory
    const model = k.kernels.create({ hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
      intermediate: c.intermediate, vocab: c.vocab, maxContext: P + N + 8, threads, bits: c.bits, qkNorm: 0, attnBias: 0, rmsEps: c.rmsEps },
    { path: file, bytes: c.bytes }, Float64Array.from(c.offsets), Float32Array.from(c.invFreq));
    // Embedding rows: the packed lm_head rows (tied: the embedding table, as in the GGUF), read from the file; the
    // engine holds its own (tiled) copy, so this is the one extra table a tied model costs the runtime here.
    const rb = rowBytes(c.bits, c.hidden), lm = c.offsets[c.offsets.length - 1];
    const table = new Uint8Array(c.vocab * rb);
    const fd = openSync(file, 'r');
    readSync(fd, table, 0, table.byteLength, lm);
    closeSync(fd);
    const logits = new Float32Array(c.vocab);
    const embed = (ids) => {
      const e = new Float32Array(ids.length * c.hidden);
      ids.forEach((id, r) => {
        const row = table.subarray(id * rb, (id + 1) * rb), bb = c.bits === 4 ? 18 : 34;
        for (let b = 0; b < c.hidden / 32; b++) {
          const d = halfToFloat(row[b * bb] | (row[b * bb + 1] << 8)), o = r * c.hidden + b * 32;
          for (let j = 0; j < 32; j++) {
            if (c.bits === 8) { const q = row[b * bb + 2 + j]; e[o + j] = (q > 127 ? q - 256 : q) * d; }
            else { const q = row[b * bb + 2 + (j & 15)]; e[o + j] = ((j < 16 ? q & 15 : q >> 4) - 8) * d; }
          }
        }
      });
      return e;
    };
    const run = async (prompt, n) => {
      const out = [];
      const m0 = mark();
      k.kernels.forward(model, embed(prompt), prompt.length, 0, logits, false);
      out.push(argmax(logits));
      const m1 = mark();
      for (let i = 1, pos = prompt.length; i < n; i++) { k.kernels.forward(model, embed([out.at(-1)]), 1, pos++, logits, false); out.push(argmax(logits)); }
      return span(m0, m1, mark(), out);
    };
    run.simd = k.kernels.simd();
    return run;
  }
  if (engine === 'ort32' || engine === 'ort128') {
    const ort = (await import('onnxruntime-node')).default;
    const s = await ort.InferenceSession.create(join(dir, `q4-b${engine.slice(3)}.onnx`), { intraOpNumThreads: threads, interOpNumThreads: 1,
      graphOptimizationLevel: 'all', executionMode: 'sequential' });
    return async (prompt, n) => {
      const kv = {};
      for (let l = 0; l < layers; l++) for (const x of ['key', 'value']) kv[`past_key_values.${l}.${x}`] = new ort.Tensor('float32', new Float32Array(0), [1, KVH, 0, HD]);
      const out = []; let ids = prompt, total = 0, m1;
      const m0 = mark();
      for (let i = 0; i < n; i++) {
        total += ids.length;
        const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]), ...kv });
        for (let l = 0; l < layers; l++) for (const x of ['key', 'value']) kv[`past_key_values.${l}.${x}`] = r[`present.${l}.${x}`];
        const lg = r.logits.data; out.push(argmax(lg.subarray(lg.length - VOCAB)));
        if (i === 0) m1 = mark();
        ids = [out.at(-1)];
      }
      return span(m0, m1, mark(), out);
    };
  }
  if (engine === 'llama') {
    const { getLlama } = await import(PEER_ENTRY);
    const llama = await getLlama({ gpu: false, build: 'never', maxThreads: threads, logLevel: 'error', progressLogs: false });
    const model = await llama.loadModel({ modelPath: join(dir, 'model.gguf'), gpuLayers: 0 });
    const ctx = await model.createContext({ contextSize: P + N + 16, batchSize: Math.max(P, 8), threads, flashAttention: false });
    const seq = ctx.getSequence();
    const run = async (prompt, n) => {
      await seq.clearHistory();
      const out = []; let m1;
      const m0 = mark();
      for await (const t of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        if (out.length === 0) m1 = mark();
        out.push(t);
        if (out.length === n) break;
      }
      return span(m0, m1, mark(), out);
    };
    run.simd = `llama.cpp ${llama.buildType}`;
    return run;
  }
  throw new Error(`unknown engine ${engine}`);
}

// ------------------------------------------------------------------------------------------------------- main
if (a.child) {
  console.log(JSON.stringify(await measure(a.child, a.dir, Number(a.threads))));
  process.exit(0);
}
if (a.setup) { await setup(a.dir); process.exit(0); }
if (a['install-peer']) {
  const why = installPeer();
  if (why) { console.error(why); process.exit(1); }
  console.error(`node-llama-cpp ${PEER_VERSION} is in ${PEER_DIR}`);
  process.exit(0);
}

const threadList = a.threads.split(',').map(Number);
let engines = a.engines.split(',');
const notes = [];
if (engines.includes('llama') && !peerInstalled()) {
  const why = installPeer();
  if (why) { engines = engines.filter((e) => e !== 'llama'); notes.push(`llama.cpp left out: ${why}`); log(notes.at(-1)); }
}
const { loadKernels } = await import(join(dist, 'run', 'backends', 'native', 'addon.js'));
const k = loadKernels();
if (!k.ok) throw new Error(`the native kernels are needed (bandwidth probe and engine): ${k.reason}`);

const root = mkdtempSync(join(tmpdir(), 'nanomind-bench-engines-'));
const child = (args) => {
  const r = spawnSync(process.execPath, [SELF, ...args], { encoding: 'utf8', maxBuffer: 1 << 26, timeout: 600_000,
    env: { ...process.env, UV_THREADPOOL_SIZE: '1', ORT_DISABLE_TELEMETRY: '1' } });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed (exit ${r.status}):\n${(r.stderr ?? '').split('\n').slice(-12).join('\n')}`);
  return r.stdout;
};
try {
  const t0 = performance.now();
  log(`building the weights (float, native pack, GGUF, 2 ORT models) in ${root} …`);
  child(['--setup', '--dir', root, '--layers', String(layers), '--bits', String(bits)]);
  log(`setup ${((performance.now() - t0) / 1000).toFixed(0)} s; ${a.runs} round(s) × threads ${threadList.join(',')} × ${engines.join(', ')}`);
  const load0 = loadavg()[0];
  const res = new Map(); // `${engine}@${threads}` → results
  const bw = new Map(threadList.map((t) => [t, []]));
  for (let r = 0; r < Number(a.runs); r++)
    for (const t of threadList) {
      bw.get(t).push(k.kernels.bandwidth(1000, t, 5));
      for (const e of engines) {
        const x = JSON.parse(child(['--child', e, '--dir', root, '--threads', String(t), '--prompt', String(P), '--new', String(N), '--layers', String(layers)]).trim().split('\n').at(-1));
        const key = `${e}@${t}`;
        if (!res.has(key)) res.set(key, []);
        res.get(key).push(x);
        log(`  round ${r + 1} ${key}: decode ${x.decodeTokPerS.toFixed(1)} tok/s, prefill ${x.prefillTokPerS.toFixed(0)} tok/s, peak RSS ${x.peakRssMB.toFixed(0)} MB`);
      }
    }
  const load1 = loadavg()[0];
  // Weight bytes read per token: every projection + lm_head (embedding rows are a lookup).
  const params = layers * (H * (H + 2 * KVH * HD) + H * H + 3 * H * INTER) + H * VOCAB;
  const mbPerToken = { native: params * (bits === 4 ? 18 : 34) / 32 / 1e6, llama: params * (bits === 4 ? 18 : 34) / 32 / 1e6,
    ort32: params * (0.5 + 4 / 32) / 1e6, ort128: params * (0.5 + 4 / 128) / 1e6 };
  const simd = res.get(`native@${threadList[0]}`)?.[0]?.simd ?? '?';
  const names = { native: `nanomind native Q${bits} block 32 (${simd})`,
    ort32: 'ORT MatMulNBits 4-bit block 32, acc 4', ort128: 'ORT MatMulNBits 4-bit block 128, acc 4',
    llama: `llama.cpp Q${bits === 4 ? '4_0' : '8_0'} (node-llama-cpp ${PEER_VERSION})` };
  const short = { native: `native ${simd}`, ort32: 'ORT b32', ort128: 'ORT b128', llama: 'llama.cpp' };
  const rows = [];
  for (const t of threadList) {
    const gbs = median(bw.get(t));
    const ref = res.get(`llama@${t}`);
    for (const e of engines) {
      const xs = res.get(`${e}@${t}`);
      const dec = xs.map((x) => x.decodeTokPerS), pre = xs.map((x) => x.prefillTokPerS);
      const row = { engine: e, name: names[e], threads: t, decodeTokPerS: median(dec), decodeMin: Math.min(...dec), decodeMax: Math.max(...dec),
        prefillTokPerS: median(pre), prefillMin: Math.min(...pre), prefillMax: Math.max(...pre), peakRssMB: median(xs.map((x) => x.peakRssMB)),
        rssAfterMB: median(xs.map((x) => x.rssAfterMB)), decodeCpuMsPerTok: median(xs.map((x) => x.decodeCpuMsPerTok)),
        prefillCpuMsPerTok: median(xs.map((x) => x.prefillCpuMsPerTok)), weightMBPerToken: mbPerToken[e], readGBps: gbs,
        bandwidthShare: (median(dec) * mbPerToken[e]) / 1000 / gbs, tokens: xs[0].tokens, short: short[e] };
      if (ref) Object.assign(row, { decodeVsLlama: row.decodeTokPerS / median(ref.map((x) => x.decodeTokPerS)),
        prefillVsLlama: row.prefillTokPerS / median(ref.map((x) => x.prefillTokPerS)), rssVsLlama: row.peakRssMB / median(ref.map((x) => x.peakRssMB)) });
      rows.push(row);
    }
  }
  const summary = { machine: `${cpus()[0]?.model} × ${cpus().length}`, threads: threadList, prompt: P, newTokens: N, runs: Number(a.runs), layers, bits,
    loadavg1: [load0, load1], readGBps: Object.fromEntries([...bw].map(([t, v]) => [t, { median: median(v), all: v }])), notes,
    rows: rows.map(({ tokens, short: _, ...r }) => ({ ...r, greedyAgreementWithNative: tokens.filter((x, i) => x === rows.find((q) => q.engine === 'native' && q.threads === r.threads)?.tokens[i]).length })) };
  if (a.json) console.log(JSON.stringify(summary, null, 2));
  else {
    const f = (v, d = 1) => (v === undefined ? '–' : v.toFixed(d));
    console.log(`${summary.machine}; prompt ${P}, ${N} new tokens; median (min–max) of ${a.runs} runs,\n`
      + `each engine in its own process; load average (1 min) ${load0.toFixed(2)} → ${load1.toFixed(2)}`);
    for (const t of threadList) console.log(`read bandwidth, ${t} thread(s): ${f(median(bw.get(t)))} GB/s (C probe, best of 5; rounds ${bw.get(t).map((x) => x.toFixed(1)).join(', ')})`);
    if (a.markdown) { // the README's table
      console.log('| threads | engine | decode tok/s | prefill tok/s | peak RSS MB | weight MB/token | share of read BW | decode / llama.cpp | prefill / llama.cpp | RSS / llama.cpp | CPU ms/token decode, prefill |');
      console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const r of summary.rows)
        console.log(`| ${r.threads} | ${r.name} | ${f(r.decodeTokPerS)} (${f(r.decodeMin)}–${f(r.decodeMax)}) | ${f(r.prefillTokPerS, 0)} (${f(r.prefillMin, 0)}–${f(r.prefillMax, 0)}) | ${f(r.peakRssMB, 0)} | ${f(r.weightMBPerToken, 0)} | ${f(100 * r.bandwidthShare, 0)} % | ${f(r.decodeVsLlama, 2)} | ${f(r.prefillVsLlama, 2)} | ${f(r.rssVsLlama, 2)} | ${f(r.decodeCpuMsPerTok)}, ${f(r.prefillCpuMsPerTok)} |`);
    } else { // 80 columns: ×llama = ratio to llama.cpp at the same thread count; BW = share of the read bandwidth
      const { table } = await import(join(dist, 'cli', 'output.js'));
      const tps = (v) => f(v, v < 100 ? 1 : 0);
      console.log(table(['thr', 'engine', 'decode tok/s', '×llama', 'prefill', '×llama', 'RSS', 'BW %', 'CPU ms'],
        rows.map((r) => [r.threads, r.short, `${tps(r.decodeTokPerS)} (${f(r.decodeMin, 0)}–${f(r.decodeMax, 0)})`, f(r.decodeVsLlama, 2),
          f(r.prefillTokPerS, 0), f(r.prefillVsLlama, 2), f(r.peakRssMB, 0), f(100 * r.bandwidthShare, 0), `${f(r.decodeCpuMsPerTok)}/${f(r.prefillCpuMsPerTok)}`]), 80));
      console.log(`${short.native}: ${names.native}\nORT b32, b128: ${names.ort32.replace(' block 32', '')}\nllama.cpp: ${names.llama}\n`
        + '×llama: ratio to llama.cpp at the same threads; RSS: peak MB; BW %: share of the\n'
        + 'read bandwidth (decode tok/s × weight MB per token); CPU ms: per token, all\n'
        + 'threads, decode/prefill');
    }
    for (const n of notes) console.log(`note: ${n}`);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
