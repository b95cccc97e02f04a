#!/usr/bin/env node
// Benchmarks (not tests): `npm run bench -- <name> [options]`. Prints medians and the machine.
// partition-large [--gb N] [--runs N] [--verify] [--keep DIR]: time and peak RSS to partition a generated model with
//   ≥ N GB of external weights (default 1), measured in a child process so the generator's memory
//   does not count.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, readdirSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const here = new URL('.', import.meta.url).pathname;
const { positionals, values } = parseArgs({ allowPositionals: true, options: { gb: { type: 'string', default: '1' }, keep: { type: 'string' }, runs: { type: 'string', default: '3' }, verify: { type: 'boolean', default: false } } });
const machine = `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;

if (positionals[0] === 'partition-large') {
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-bench-'));
  try {
    const gb = Number(values.gb);
    // Text decoder sized so its weights reach `gb` GB: embed + lm_head (2·V·H) + layers (≈ 4H² + 3·H·I each).
    const hidden = 2048, vocab = 32000, intermediate = 5632;
    const perLayer = 4 * 4 * hidden * hidden * 0.625 + 3 * 4 * hidden * intermediate;
    const layers = Math.max(1, Math.ceil((gb * 1e9 - 2 * 4 * vocab * hidden) / perLayer));
    const gen = spawnSync(process.execPath, ['--max-old-space-size=16384', '--input-type=module', '-e', `
      const { buildTinyLlavaMonolithic } = await import(${JSON.stringify(join(here, '..', 'dist', 'fixtures', 'index.js'))});
      await buildTinyLlavaMonolithic(${JSON.stringify(join(dir, 'model', 'model.onnx'))}, { externalThreshold: 1024,
        text: { hidden: ${hidden}, heads: 16, kvHeads: 4, headDim: 128, intermediate: ${intermediate}, vocab: ${vocab}, layers: ${layers} } });
    `], { stdio: 'inherit' });
    if (gen.status !== 0) process.exit(gen.status ?? 1);
    const files = readdirSync(join(dir, 'model'));
    const weights = files.reduce((s, f) => s + statSync(join(dir, 'model', f)).size, 0);
    console.log(`model: ${layers} decoder layers, hidden ${hidden}, ${(weights / 1e9).toFixed(2)} GB on disk (${files.join(', ')})`);
    const runs = [];
    for (let i = 0; i < Number(values.runs); i++) {
      const out = join(dir, `bricks-${i}`);
      const t0 = performance.now();
      const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, join(here, '..', 'bin', 'nanomind.js'), 'partition', join(dir, 'model', 'model.onnx'), '-o', out, values.verify ? '--verify' : '--no-verify', '--json'], { encoding: 'utf8' });
      const seconds = (performance.now() - t0) / 1000;
      if (r.status !== 0) { console.error(r.stdout, r.stderr); process.exit(1); }
      const rssMb = Number(r.stderr.trim().split('\n').pop()) / 1024;
      const result = JSON.parse(r.stdout);
      const largest = result.bricks.length;
      runs.push({ seconds, rssMb });
      console.log(`run ${i + 1}: ${seconds.toFixed(2)} s, peak RSS ${rssMb.toFixed(0)} MB (${largest} bricks${result.verify ? `, verify ${result.verify.ok ? 'ok' : 'FAILED'} max rel ${result.verify.maxRelDiff}` : ''})`);
      rmSync(out, { recursive: true, force: true });
    }
    const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const largestTensor = 4 * vocab * hidden;
    console.log(`median: ${median(runs.map((r) => r.seconds)).toFixed(2)} s, peak RSS ${median(runs.map((r) => r.rssMb)).toFixed(0)} MB; largest tensor ${(largestTensor / 2 ** 20).toFixed(0)} MiB; budget 2×largest+300 MB = ${(2 * largestTensor / 2 ** 20 + 300).toFixed(0)} MB`);
    console.log(`machine: ${machine}`);
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
} else {
  console.error('usage: npm run bench -- partition-large [--gb N] [--runs N] [--verify] [--keep DIR]');
  process.exit(2);
}
