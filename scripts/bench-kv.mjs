#!/usr/bin/env node
// Benchmark (not a test): decode tok/s of a GroupQueryAttention decoder with the concat KV cache vs the
// shared-buffer one (src/run/generation/kv-cache.ts), at several prompt lengths, same process, modes
// interleaved per run so that the shared machine's load hits them alike. Needs `npx tsc -p tsconfig.json`.
//
//   node scripts/bench-kv.mjs [--contexts 64,512,1536] [--runs 3] [--new 64] [--threads 2] [--keep DIR]
//
// Prints the runs per context, then median and best per mode with the ratios, and the load average.
//
// Model: the phi3 fixture (onnxruntime-genai builder layout, fp32) at hidden 512, 4 layers, 8 heads,
// 8 KV heads (head_dim 64), intermediate 1408, vocab 320 (the fixture tokenizer's), 2048 positions.
// Modes: concat (present = Concat(past, new), a new tensor per step); shared (one buffer per pair fed
// as past and bound as present, starting at 256 rows and doubling); shared-full (the same, allocated
// once at the whole 2048-token context: onnxruntime-node copies every fetched output, so this shows
// what that hidden copy costs when the buffer is much longer than the cache in use).
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';

const dist = new URL('../dist/', import.meta.url).pathname;
const { buildGqaTextLm } = await import(join(dist, 'fixtures', 'gqa-decoder.js'));
const { partition } = await import(join(dist, 'partition', 'index.js'));
const { openBrickSet } = await import(join(dist, 'run', 'brick-set.js'));
const { ChatSession } = await import(join(dist, 'run', 'generation', 'chat-session.js'));

const { values } = parseArgs({ options: {
  contexts: { type: 'string', default: '64,512,1536' }, runs: { type: 'string', default: '3' }, new: { type: 'string', default: '64' },
  threads: { type: 'string', default: '2' }, keep: { type: 'string' },
} });
const contexts = values.contexts.split(',').map(Number);
const runs = Number(values.runs), newTokens = Number(values.new), threads = Number(values.threads);
const MAX = 2048;
const ortVersion = createRequire(import.meta.url)('onnxruntime-node/package.json').version;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
console.log(`machine: ${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, onnxruntime-node ${ortVersion}`);
console.log(`load average at start (1/5/15 min): ${load()}`);

const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-bench-kv-'));
try {
  const size = { hidden: 512, layers: 4, heads: 8, kvHeads: 8, intermediate: 1408, maxPositions: MAX };
  await buildGqaTextLm(join(dir, 'model'), { family: 'phi3', variants: ['fp32'], size });
  const { manifest } = await partition({ input: join(dir, 'model'), out: join(dir, 'bricks'), verify: false });
  const dec = manifest.bricks.find((b) => b.kind === 'decoder');
  console.log(`model: phi3 layout, ${JSON.stringify(size)}, ${(dec.bytes / 2 ** 20).toFixed(1)} MiB weights; bricks.json kvCache: ${dec.kvCache}`);
  const set = await openBrickSet(join(dir, 'bricks'), { threads });
  const modes = { concat: { kvCache: 'concat' }, shared: { kvCache: 'shared-buffer' }, 'shared-full': { kvCache: 'shared-buffer', kvGrowRows: MAX } };
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 300;
  // Warm-up: session open and ORT's first-run allocations.
  await new ChatSession(set, { maxContext: MAX }).generate({ inputIds: [1, 2, 3] }, { maxNewTokens: 4, stopTokenIds: [] });

  const results = {};
  for (const ctx of contexts) {
    const ids = Array.from({ length: ctx }, rand);
    const rates = Object.fromEntries(Object.keys(modes).map((m) => [m, []]));
    const tokens = {};
    for (let r = 0; r < runs; r++)
      for (const [name, opts] of Object.entries(modes)) {
        const s = new ChatSession(set, { maxContext: MAX, ...opts });
        const out = await s.generate({ inputIds: ids }, { maxNewTokens: newTokens, stopTokenIds: [] });
        rates[name].push(out.stats.decodeTokPerS);
        tokens[name] = out.tokens.join(',');
      }
    if (new Set(Object.values(tokens)).size !== 1) throw new Error(`context ${ctx}: the modes generated different tokens`);
    results[ctx] = Object.fromEntries(Object.entries(rates).map(([m, v]) => [m, { median: median(v), best: Math.max(...v) }]));
    console.log(`context ${ctx}: runs ${JSON.stringify(Object.fromEntries(Object.entries(rates).map(([m, v]) => [m, v.map((x) => +x.toFixed(1))])))}, load ${load()}`);
  }
  await set.close();

  // The best run is the one least disturbed by other processes; on a shared machine it is the steadier figure.
  for (const stat of ['median', 'best']) {
    console.log(`\ndecode tok/s, ${stat} of ${runs} runs, ${newTokens} new tokens after a prompt of <context> tokens, ${threads} intra-op threads`);
    console.log('| context | concat | shared | shared / concat | shared-full (2048 rows once) | shared-full / concat |');
    console.log('|---:|---:|---:|---:|---:|---:|');
    for (const ctx of contexts) {
      const x = Object.fromEntries(Object.entries(results[ctx]).map(([m, v]) => [m, v[stat]]));
      console.log(`| ${ctx} | ${x.concat.toFixed(1)} | ${x.shared.toFixed(1)} | ${(x.shared / x.concat).toFixed(2)}× | ${x['shared-full'].toFixed(1)} | ${(x['shared-full'] / x.concat).toFixed(2)}× |`);
    }
  }
  console.log(`load average at end (1/5/15 min): ${load()}`);
} finally {
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
