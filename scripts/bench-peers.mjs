#!/usr/bin/env node
// nanomind vs transformers.js on the same ONNX files (`npm run bench:peers -- [options]`). Not a test.
//
// Both engines run onnxruntime-node 1.30 on the CPU, so the difference is what each does around ORT.
// A text LM in the onnx-community layout (`onnx/model.onnx`, config.json model_type qwen2) is generated
// with seeded random weights; `nanomind partition` adopts model.onnx byte for byte (checked by sha256),
// so both load the same file. Same prompt ids, greedy, eos ignored on both sides (every run generates
// exactly --new-tokens), intra-op threads set the same way, each engine in its own process, one warm-up
// then --runs measured runs; medians over all runs of all rounds. TTFT = call → first token; decode tok/s = (new - 1) / (end-to-end -
// TTFT); prefill tok/s = prompt / TTFT; the same formulas for both. CPU ms is the process's user + system
// time per generate call: on a busy machine it moves less than wall time (ORT's spinning threads count too).
// A third process runs a bare loop over onnxruntime-node on the same file: the floor both engines sit on.
//
//   --runs N (5 per process) --rounds N (2 processes per engine, alternating) --threads 1,2 --prompt-tokens N (64) --new-tokens N (64) --size large|small (large)
//   --llava      also try the tiny LLaVA-OneVision split folder through LlavaOnevisionForConditionalGeneration
//   --keep DIR   keep the generated models in DIR    --json   print the results as JSON
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

// ONNX Runtime telemetry off for this script and every process it starts (src/util/no-telemetry.ts).
process.env.ORT_DISABLE_TELEMETRY = '1';

const here = new URL('.', import.meta.url).pathname;
const dist = join(here, '..', 'dist');
const { values: a } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '2' }, threads: { type: 'string', default: '1,2' },
    'prompt-tokens': { type: 'string', default: '64' }, 'new-tokens': { type: 'string', default: '64' },
    size: { type: 'string', default: 'large' }, llava: { type: 'boolean', default: false },
    keep: { type: 'string' }, json: { type: 'boolean', default: false },
    worker: { type: 'string' }, dir: { type: 'string' }, model: { type: 'string' },
  },
});
const SIZES = {
  // ≈ 25 M parameters, 97 MB of fp32 weights: large enough that the per-token weight traffic, not the
  // per-call overhead, sets the decode speed (as in a real model).
  large: { hidden: 512, layers: 8, heads: 8, kvHeads: 2, headDim: 64, intermediate: 1536, vocab: 320 },
  small: {},
};
const promptIds = (n) => Array.from({ length: n }, (_, i) => (7 * i + 3) % 300); // plain byte/merge ids, no special token
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const k = s.length >> 1; return s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2; };

if (a.worker) await worker();
else await main();

async function main() {
  const root = a.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-peers-'));
  try {
    const { buildTinyTextLm, buildTinyLlava } = await import(join(dist, 'fixtures', 'index.js'));
    const { partition } = await import(join(dist, 'partition', 'index.js'));
    const size = SIZES[a.size];
    if (!size) throw new Error(`--size ${a.size}: expected large or small`);
    const text = join(root, 'text-lm');
    const built = await buildTinyTextLm(text, { text: size });
    await partition({ input: text, out: join(root, 'text-lm-bricks') });
    const sha = (f) => createHash('sha256').update(readFileSync(f)).digest('hex');
    const same = sha(join(text, 'onnx', 'model.onnx')) === sha(join(root, 'text-lm-bricks', 'model.onnx'));
    const mb = readFileSync(join(text, 'onnx', 'model.onnx')).length / 1e6;
    const results = [];
    const loadBefore = loadavg();
    const rounds = Number(a.rounds);
    for (const threads of a.threads.split(',').map(Number)) {
      // Engines alternate, one process each, `rounds` times: a load change on the machine hits both alike.
      const got = { nanomind: [], 'transformers.js': [], ort: [] };
      const where = { nanomind: join(root, 'text-lm-bricks'), 'transformers.js': root, ort: join(text, 'onnx', 'model.onnx') };
      for (let k = 0; k < rounds; k++)
        for (const engine of k % 2 ? ['ort', 'transformers.js', 'nanomind'] : ['nanomind', 'transformers.js', 'ort'])
          got[engine].push(child(engine, where[engine], 'text-lm', threads));
      results.push({ threads, nanomind: combine(got.nanomind), 'transformers.js': combine(got['transformers.js']), ort: combine(got.ort) });
    }
    let llava;
    if (a.llava) {
      await buildTinyLlava(join(root, 'llava'));
      await partition({ input: join(root, 'llava'), out: join(root, 'llava-bricks') });
      llava = { nanomind: combine([child('nanomind', join(root, 'llava-bricks'), 'llava', 1, 'llava')]), 'transformers.js': combine([child('transformers.js', root, 'llava', 1, 'llava')]) };
    }
    const machine = `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
    const report = { machine, model: { params: built.params, onnxMB: mb, sameFile: same, config: size }, promptTokens: Number(a['prompt-tokens']), newTokens: Number(a['new-tokens']), runs: Number(a.runs), rounds: Number(a.rounds), results, llava, loadAverage: { before: loadBefore, after: loadavg() } };
    if (a.json) console.log(JSON.stringify(report, null, 2));
    else print(report);
  } finally {
    if (!a.keep) rmSync(root, { recursive: true, force: true });
  }
}

/**
 * Medians over the runs of every round (load time and peak RSS: the rounds' medians), with the spread of
 * end-to-end time: the interquartile range as a share of the median, so a noisy run shows itself.
 */
function combine(list) {
  const bad = list.find((x) => x.error);
  if (bad) return bad;
  const runs = list.flatMap((x) => x.runs);
  const all = (k) => median(runs.map((r) => r[k]));
  const e2e = runs.map((r) => r.totalMs).sort((x, y) => x - y);
  const q = (f) => e2e[Math.min(e2e.length - 1, Math.round(f * (e2e.length - 1)))];
  return {
    ttftMs: all('ttftMs'), totalMs: all('totalMs'), cpuMs: all('cpuMs'), prefillTokPerS: all('prefillTokPerS'), decodeTokPerS: all('decodeTokPerS'),
    totalIqrPct: (100 * (q(0.75) - q(0.25))) / all('totalMs'), totalMinMs: e2e[0], totalMaxMs: e2e[e2e.length - 1],
    loadMs: median(list.map((x) => x.loadMs)), peakRssMb: median(list.map((x) => x.peakRssMb)), tokens: list[0].tokens,
    sameAcrossRounds: list.every((x) => x.tokens.join() === list[0].tokens.join()), runs: runs.length,
  };
}

function child(engine, dir, model, threads, kind = 'text') {
  const r = spawnSync(process.execPath, [join(here, 'bench-peers.mjs'), '--worker', engine, '--dir', dir, '--model', model, '--threads', String(threads),
    '--runs', a.runs, '--prompt-tokens', a['prompt-tokens'], '--new-tokens', a['new-tokens'], ...(kind === 'llava' ? ['--llava'] : [])],
  { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) return { error: (r.stderr || r.stdout).trim().split('\n').slice(-6).join('\n') };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function print(r) {
  console.log(`machine: ${r.machine}`);
  console.log(`model: text LM, ${(r.model.params / 1e6).toFixed(1)} M params, model.onnx ${r.model.onnxMB.toFixed(1)} MB fp32, same file for both: ${r.model.sameFile ? 'yes (sha256)' : 'NO'}`);
  console.log(`${r.promptTokens} prompt tokens, ${r.newTokens} new tokens, greedy, eos ignored; medians of ${r.rounds} processes × ${r.runs} runs (after a warm-up each) per engine, engines alternating`);
  console.log('ratio × = nanomind vs transformers.js, > 1: nanomind faster; IQR % = spread of end-to-end time');
  const la = (l) => l.map((x) => x.toFixed(2)).join(' ');
  console.log(`load average (1, 5, 15 min): ${la(r.loadAverage.before)} before, ${la(r.loadAverage.after)} after\n`);
  const f = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
  const name = { nanomind: 'nanomind', 'transformers.js': 'transformers', ort: 'ORT floor' };
  // 80 columns: TTFT is prompt / prefill rate, so it is left to --json.
  const rows = [['thr', 'engine', 'prefill/s', 'decode/s', 'e2e ms', 'IQR %', 'CPU ms', 'load ms', 'RSS MB']];
  for (const res of r.results) {
    for (const e of ['nanomind', 'transformers.js', 'ort']) {
      const x = res[e];
      rows.push(x.error ? [res.threads, name[e], `failed: ${x.error.split('\n')[0]}`]
        : [res.threads, name[e], f(x.prefillTokPerS, 0), f(x.decodeTokPerS), f(x.totalMs), f(x.totalIqrPct), f(x.cpuMs, 0), f(x.loadMs, 0), f(x.peakRssMb, 0)]);
    }
    const n = res.nanomind, t = res['transformers.js'];
    if (!n.error && !t.error) {
      rows.push([res.threads, 'ratio ×', f(n.prefillTokPerS / t.prefillTokPerS, 2), f(n.decodeTokPerS / t.decodeTokPerS, 2), f(t.totalMs / n.totalMs, 2), '', f(t.cpuMs / n.cpuMs, 2), '', '']);
      const o = res.ort;
      rows.push([res.threads, 'same tokens', n.tokens.join(',') === t.tokens.join(',') && (o.error || o.tokens.join(',') === n.tokens.join(',')) ? 'yes' : 'NO']);
    }
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((x) => String(x[i] ?? '').length)));
  for (const [k, x] of rows.entries()) {
    console.log(x.map((c, i) => String(c ?? '').padEnd(w[i])).join('  ').trimEnd());
    if (k === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
  if (r.llava) {
    console.log('\nLLaVA-OneVision split folder (tiny, 1 thread):');
    for (const [e, x] of Object.entries(r.llava))
      console.log(`  ${e}: ${x.error ? `does not run: ${x.error.split('\n').pop()}` : `TTFT ${f(x.ttftMs)} ms, decode ${f(x.decodeTokPerS)} tok/s, end to end ${f(x.totalMs)} ms, tokens ${x.tokens.slice(0, 8).join(',')}…`}`);
    const [n, t] = [r.llava.nanomind, r.llava['transformers.js']];
    if (!n.error && !t.error) console.log(`  same tokens: ${n.tokens.join(',') === t.tokens.join(',') ? 'yes' : 'NO'}`);
  }
}

// ---- one engine, one configuration, in its own process -------------------------------------------------

async function worker() {
  const threads = Number(a.threads), runs = Number(a.runs), P = Number(a['prompt-tokens']), N = Number(a['new-tokens']);
  const llava = a.llava;
  // LLaVA: 16 image rows after the first tokens (the fixture's vision encoder yields 16 rows for a 32×32 image).
  const ids = llava ? [...promptIds(4), ...Array(16).fill(319), ...promptIds(P).slice(4)] : promptIds(P);
  const pixels = Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.sin(0.1 * i + 0.9));
  const t0 = performance.now();
  const gen = a.worker === 'nanomind' ? await nanomind(a.dir, threads, ids, N, llava && pixels)
    : a.worker === 'ort' ? await bareOrt(a.dir, threads, ids, N)
    : await transformersJs(a.dir, a.model, threads, ids, N, llava && pixels);
  const loadMs = performance.now() - t0;
  await gen(); // warm-up
  const list = [];
  let tokens;
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const r = await gen();
    const c = process.cpuUsage(c0);
    tokens ??= r.tokens;
    list.push({ ...r, cpuMs: (c.user + c.system) / 1000 });
  }
  console.log(JSON.stringify({
    loadMs, peakRssMb: process.resourceUsage().maxRSS / 1024, tokens,
    runs: list.map((r) => ({
      ttftMs: r.ttftMs, totalMs: r.totalMs, cpuMs: r.cpuMs, prefillTokPerS: (ids.length * 1000) / r.ttftMs,
      decodeTokPerS: ((r.tokens.length - 1) * 1000) / (r.totalMs - r.ttftMs),
    })),
  }));
}

async function nanomind(dir, threads, ids, N, pixels) {
  const { openBrickSet } = await import(join(dist, 'run', 'brick-set.js'));
  const { ChatSession } = await import(join(dist, 'run', 'generation', 'chat-session.js'));
  const set = await openBrickSet(dir, { threads });
  const session = new ChatSession(set, { maxContext: ids.length + N + 1 });
  return async () => {
    session.reset();
    const t0 = performance.now();
    let first = 0;
    const features = pixels ? { 319: (await set.encode('vision', { type: 'float32', data: pixels, dims: [1, 3, 32, 32] })).features } : undefined;
    const r = await session.generate({ inputIds: ids, features }, { maxNewTokens: N, stopTokenIds: [], onToken: () => { first ||= performance.now(); } });
    return { ttftMs: first - t0, totalMs: performance.now() - t0, tokens: r.tokens };
  };
}

async function transformersJs(root, model, threads, ids, N, pixels) {
  const tjs = await import('@huggingface/transformers');
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = root.endsWith('/') ? root : `${root}/`;
  const opts = { local_files_only: true, dtype: 'fp32', device: 'cpu', session_options: { intraOpNumThreads: threads } };
  const m = pixels
    ? await tjs.LlavaOnevisionForConditionalGeneration.from_pretrained(model, opts)
    : await tjs.AutoModelForCausalLM.from_pretrained(model, opts);
  const input_ids = new tjs.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);
  const attention_mask = new tjs.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
  return async () => {
    let first = 0, puts = 0;
    // put() gets the prompt first, then each generated token right after it is sampled.
    const streamer = { put() { if (puts++ === 1) first = performance.now(); }, end() {} };
    const t0 = performance.now();
    const extra = pixels ? { pixel_values: new tjs.Tensor('float32', pixels, [1, 3, 32, 32]) } : {};
    const out = await m.generate({ input_ids, attention_mask, ...extra, max_new_tokens: N, do_sample: false, eos_token_id: null, streamer });
    const totalMs = performance.now() - t0;
    return { ttftMs: first - t0, totalMs, tokens: out.tolist()[0].slice(ids.length).map(Number) };
  };
}

/** The floor: a bare loop over onnxruntime-node (feeds built inline, argmax, present → past), no framework. */
async function bareOrt(file, threads, ids, N) {
  const ort = (await import('onnxruntime-node')).default;
  const s = await ort.InferenceSession.create(file, { executionProviders: ['cpu'], intraOpNumThreads: threads });
  const cfg = JSON.parse(readFileSync(join(file, '..', '..', 'config.json'), 'utf8'));
  const L = cfg.num_hidden_layers, H = cfg.num_key_value_heads, D = cfg.head_dim, V = cfg.vocab_size;
  const i64 = (xs) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);
  return async () => {
    let past = {};
    for (let l = 0; l < L; l++) for (const kv of ['key', 'value']) past[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]);
    const t0 = performance.now(), tokens = [];
    let first = 0, len = 0, cur = ids;
    for (let step = 0; step < N; step++) {
      const out = await s.run({ input_ids: i64(cur), attention_mask: i64(Array(len + cur.length).fill(1)), position_ids: i64(cur.map((_, i) => len + i)), ...past });
      const lg = out.logits.data.subarray(out.logits.data.length - V);
      let best = 0;
      for (let i = 1; i < V; i++) if (lg[i] > lg[best]) best = i;
      tokens.push(best);
      first ||= performance.now();
      past = {};
      for (let l = 0; l < L; l++) for (const kv of ['key', 'value']) past[`past_key_values.${l}.${kv}`] = out[`present.${l}.${kv}`];
      len += cur.length;
      cur = [best];
    }
    return { ttftMs: first - t0, totalMs: performance.now() - t0, tokens };
  };
}
