#!/usr/bin/env node
// Loopback load test of `nanomind serve` on the embedded model (`npm run bench:serve -- [options]`). Not a test.
//
// Starts the built CLI (`dist/`: run `npm run build` first) on a free 127.0.0.1 port, then N concurrent
// clients each ask Q held-out image questions over the streamed OpenAI API (SSE), one request at a time
// per client. Every request carries its own id; the script checks each got exactly one complete answer
// (a `[DONE]` after a usage chunk), that the answer equals PyTorch's own (eval/reference.json; only
// questions PyTorch answers correctly are used), and that the server counted as many answers as were sent.
// Meanwhile a "killer" client starts long generations (end-of-sequence ignored) and drops the connection
// after the first tokens: the server must cancel them at once, and the others must not stall.
// One untimed warm-up request comes first (its cold latency is printed). Printed: wall time, requests/s, client-side latency and TTFT p50/p99, the server's queue wait p50/p99.
//
//   --clients N (8) --questions N (25 per client) --kills N (3) --max-queue N (64) --json
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const root = join(new URL('.', import.meta.url).pathname, '..');
const evalDir = join(root, 'models', 'shapes-vlm', 'eval');
const { values: a } = parseArgs({ options: {
  clients: { type: 'string', default: '8' }, questions: { type: 'string', default: '25' }, kills: { type: 'string', default: '3' },
  'max-queue': { type: 'string', default: '64' }, json: { type: 'boolean', default: false },
} });
const CLIENTS = Number(a.clients), QUESTIONS = Number(a.questions), KILLS = Number(a.kills);
const LIMIT_MS = 10 * 60_000; // bounded: the whole run is abandoned after this

const reference = JSON.parse(readFileSync(join(evalDir, 'reference.json'), 'utf8')).answers;
const rows = readFileSync(join(evalDir, 'eval.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  .filter((r) => r.modality === 'typed' && reference[r.id] === r.answer);
const images = new Map(rows.map((r) => [r.id, `data:image/png;base64,${readFileSync(join(evalDir, r.image)).toString('base64')}`]));

const server = spawn(process.execPath, [join(root, 'bin', 'nanomind.js'), 'serve', join(root, 'models', 'shapes-vlm'), '--port', '0', '--max-queue', a['max-queue']],
  { env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '', err = '';
server.stdout.on('data', (d) => { out += d; });
server.stderr.on('data', (d) => { err += d; });
const guard = setTimeout(() => { console.error('bench-serve: over the time limit, giving up'); server.kill('SIGKILL'); process.exit(1); }, LIMIT_MS);
while (!/http:\/\/127\.0\.0\.1:\d+/.test(out)) {
  if (server.exitCode !== null) { console.error(err); process.exit(1); }
  await new Promise((r) => setTimeout(r, 50));
}
const base = /http:\/\/127\.0\.0\.1:\d+/.exec(out)[0];
const { port } = new URL(base);

/** One streamed chat request; resolves with the SSE events, TTFT and latency. `killAfter`: drop the socket after that many deltas. */
function ask(body, killAfter) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '', ttft, deltas = 0, text = '', usage, timings, done = false, status = res.statusCode;
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buf += chunk;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, k); buf = buf.slice(k + 2);
          if (ev === 'data: [DONE]') { done = true; continue; }
          if (!ev.startsWith('data: ')) continue;
          const j = JSON.parse(ev.slice(6));
          const d = j.choices?.[0]?.delta?.content;
          if (d) { ttft ??= performance.now() - t0; text += d; deltas++; }
          if (j.usage) { usage = j.usage; timings = j.timings; }
          if (killAfter !== undefined && deltas >= killAfter) { req.destroy(); resolve({ killed: true, deltas }); return; }
        }
      });
      res.on('end', () => resolve({ status, text, ttft, ms: performance.now() - t0, usage, timings, done, body: buf }));
      res.on('error', (e) => (killAfter !== undefined ? resolve({ killed: true, deltas }) : reject(e)));
    });
    req.on('error', (e) => (killAfter !== undefined ? resolve({ killed: true }) : reject(e)));
    req.end(JSON.stringify(body));
  });
}

const question = (r, id) => ({ model: 'shapes-vlm', stream: true, user: id,
  messages: [{ role: 'user', content: [{ type: 'text', text: r.question }, { type: 'image_url', image_url: { url: images.get(r.id) } }] }] });

// One untimed request first: ORT's first runs allocate and plan; its latency is printed as the cold start.
const cold = await ask(question(rows[rows.length - 1], 'warm-up'));
if (cold.status !== 200 || !cold.done) { console.error('bench-serve: the warm-up request failed', cold.body); server.kill('SIGKILL'); process.exit(1); }

const results = new Map(); // request id → results (must end up exactly one each)
let wrong = [];
const t0 = performance.now();
const clients = Array.from({ length: CLIENTS }, async (_, c) => {
  for (let q = 0; q < QUESTIONS; q++) {
    const r = rows[(c * QUESTIONS + q) % rows.length];
    const id = `c${c}-q${q}`;
    const res = await ask(question(r, id));
    results.set(id, [...(results.get(id) ?? []), res]);
    if (res.status !== 200 || !res.done || res.text.trim() !== reference[r.id]) wrong.push({ id, row: r.id, status: res.status, got: res.text, expected: reference[r.id], body: res.body });
  }
});
const killer = (async () => {
  const out = [];
  for (let k = 0; k < KILLS; k++) {
    await new Promise((r) => setTimeout(r, 300 + 400 * k));
    out.push(await ask({ model: 'shapes-vlm', stream: true, ignore_eos: true, max_tokens: 200, messages: [{ role: 'user', content: 'describe the image.' }] }, 3));
  }
  return out;
})();
await Promise.all(clients);
const killed = await killer;
const wall = performance.now() - t0;

const metrics = await (await fetch(`${base}/metrics`)).text();
const sample = (name) => Number(metrics.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ')[1] ?? 0);
server.kill('SIGTERM');
await new Promise((r) => server.on('exit', r));
clearTimeout(guard);

const all = [...results.values()].flat();
const pct = (xs, p) => { const s = [...xs].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]; };
const lat = all.map((r) => r.ms), ttft = all.map((r) => r.ttft ?? NaN), queue = all.map((r) => r.timings?.queue_ms ?? NaN);
const sent = CLIENTS * QUESTIONS;
const report = {
  machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`, node: process.version,
  clients: CLIENTS, questions: sent, answered: all.length, duplicated: [...results.values()].filter((v) => v.length > 1).length,
  lost: sent - results.size, wrong: wrong.length, correct: all.length - wrong.length,
  killed: killed.filter((k) => k.killed).length,
  coldMs: cold.ms, serverOk: sample('nanomind_requests_total{api="openai",outcome="ok"}') - 1, serverCancelled: sample('nanomind_requests_total{api="openai",outcome="cancelled"}'),
  wallS: wall / 1000, requestsPerS: sent / (wall / 1000),
  latencyMs: { p50: pct(lat, 50), p99: pct(lat, 99) }, ttftMs: { p50: pct(ttft, 50), p99: pct(ttft, 99) }, queueWaitMs: { p50: pct(queue, 50), p99: pct(queue, 99) },
  generatedTokens: sample('nanomind_generated_tokens_total'),
};
// What the killed generations cost the decoder: every generated token not in a delivered answer.
report.killedTokens = report.generatedTokens - cold.usage.completion_tokens - all.reduce((n, r) => n + (r.usage?.completion_tokens ?? 0), 0);
const ok = report.lost === 0 && report.duplicated === 0 && report.wrong === 0 && report.serverOk === sent && report.serverCancelled === report.killed
  && report.killedTokens < report.killed * 200;
if (a.json) console.log(JSON.stringify({ ...report, ok, wrongAnswers: wrong.slice(0, 10) }, null, 2));
else {
  const f = (x) => x.toFixed(0);
  console.log(`nanomind serve, loopback, embedded model — ${report.machine}, Node ${report.node}`);
  console.log(`${CLIENTS} clients × ${QUESTIONS} image questions (streamed): ${report.correct}/${sent} correct (= PyTorch), ${report.lost} lost, ${report.duplicated} duplicated; server counted ${report.serverOk} answered`);
  console.log(`${report.killed} clients killed mid-stream (each asked for 200 tokens): server cancelled ${report.serverCancelled}, after ${report.killedTokens} tokens in all`);
  console.log(`wall ${report.wallS.toFixed(1)} s · ${report.requestsPerS.toFixed(1)} requests/s (after one untimed warm-up request: ${f(report.coldMs)} ms cold)`);
  console.log(`latency p50 ${f(report.latencyMs.p50)} ms, p99 ${f(report.latencyMs.p99)} ms · TTFT p50 ${f(report.ttftMs.p50)} ms, p99 ${f(report.ttftMs.p99)} ms · queue wait p50 ${f(report.queueWaitMs.p50)} ms, p99 ${f(report.queueWaitMs.p99)} ms`);
  for (const w of wrong.slice(0, 5)) console.log(`  wrong: ${w.id} (${w.row}) status ${w.status}: got ${JSON.stringify(w.got)}, PyTorch ${JSON.stringify(w.expected)}`);
  console.log(ok ? 'OK' : 'FAILED');
}
process.exitCode = ok ? 0 : 1;
