#!/usr/bin/env node
// The simulator against the machine, in one command (`npm run bench:plan -- [options]`). Not a test.
//
// 1. `nanomind bench --calibrate` measures this machine into host.json (its own micro-models only).
// 2. Two bundles are compiled for that profile: (a) the embedded model (models/shapes-vlm: ~0.6 M
//    parameters, overhead-bound) and (b) a generated ~25 M-parameter text LM (scripts/bench-peers.mjs'
//    'large' size: 97 MB of fp32 weights, weight-bound decode).
// 3. `nanomind bench <bundle> --against-plan --json` runs each plan's reference request; the script prints
//    predicted vs measured side by side with the ratio and the ±25 % verdict, for bench's median run and
//    for its best run (least preempted, as calibrate's own figures are).
//
// On a shared machine run it when the load is low: calibration and bench are minutes apart, and a load
// change between them moves the ratio, not the model.
//
//   --runs N (5) --mib N (256, calibrate's memory read per thread) --threads N (calibrate and bench alike; default: all cores
//   for calibrate, ORT's default for bench) --keep DIR --json
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

process.env.ORT_DISABLE_TELEMETRY = '1';
const root = join(new URL('.', import.meta.url).pathname, '..');
const { values: a } = parseArgs({ options: { runs: { type: 'string', default: '5' }, threads: { type: 'string' }, mib: { type: 'string', default: '256' }, keep: { type: 'string' }, json: { type: 'boolean', default: false } } });
const work = a.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-plan-'));
const threads = a.threads ? ['--threads', a.threads] : [];
const say = (s) => { if (!a.json) process.stderr.write(`${s}\n`); };

const nanomind = (...args) => {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'nanomind.js'), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`nanomind ${args.join(' ')} failed (${r.status}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
};

try {
  const host = join(work, 'host.json');
  say(`calibrating (load ${loadavg()[0].toFixed(2)}) …`);
  nanomind('bench', '--calibrate', '-o', host, '--runs', a.runs, '--mib', a.mib, ...threads, '--json');
  const models = [];
  say('(a) the embedded model: partition + compile');
  nanomind('partition', join(root, 'models', 'shapes-vlm'), '-o', join(work, 'sv'), '--json');
  // --engine ort: the plan's cost model is ONNX Runtime's; compile's default would pack the decoder for the native kernels.
  nanomind('compile', join(work, 'sv'), '--target', host, '-o', join(work, 'sv-bundle'), '--engine', 'ort', '--json');
  models.push(['shapes-vlm (embedded, ~0.6 M params)', join(work, 'sv-bundle')]);
  say('(b) a ~25 M-parameter text LM: generate + partition + compile');
  const { buildTinyTextLm } = await import(join(root, 'dist', 'fixtures', 'index.js'));
  await buildTinyTextLm(join(work, 'lm'), { text: { hidden: 512, layers: 8, heads: 8, kvHeads: 2, headDim: 64, intermediate: 1536, vocab: 320 } });
  nanomind('partition', join(work, 'lm'), '-o', join(work, 'lm-bricks'), '--json');
  nanomind('compile', join(work, 'lm-bricks'), '--target', host, '-o', join(work, 'lm-bundle'), '--engine', 'ort', '--json');
  models.push(['text LM (generated, ~25 M params)', join(work, 'lm-bundle')]);

  const { planVsMeasured } = await import(join(root, 'dist', 'run', 'plan-check.js'));
  const { readBundle } = await import(join(root, 'dist', 'formats', 'bundle.js'));
  const results = [];
  for (const [name, dir] of models) {
    say(`bench --against-plan: ${name} (load ${loadavg()[0].toFixed(2)})`);
    const r = JSON.parse(nanomind('bench', dir, '--against-plan', '--runs', a.runs, '--stream-images', '0', ...threads, '--json'));
    const best = planVsMeasured((await readBundle(dir, { checkHashes: false })).plan, r, 0.25, 'best');
    results.push({ model: name, load: loadavg()[0], ...r.againstPlan, best: best.rows });
  }
  if (a.json) console.log(JSON.stringify(results, null, 2));
  else {
    const f = (n) => (n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3));
    console.log(`${'model'.padEnd(38)} ${'what'.padEnd(14)} ${'predicted'.padStart(10)} ${'median'.padStart(10)} ${'ratio'.padStart(6)} ±25 %  ${'best'.padStart(10)} ${'ratio'.padStart(6)} ±25 %`);
    for (const r of results)
      r.rows.forEach((row, i) => {
        const b = r.best[i];
        console.log(`${r.model.padEnd(38)} ${row.what.padEnd(14)} ${f(row.predicted).padStart(10)} ${f(row.measured).padStart(10)} ${row.ratio.toFixed(2).padStart(6)} ${(row.within ? 'yes' : 'NO').padEnd(5)}  `
          + `${f(b.measured).padStart(10)} ${b.ratio.toFixed(2).padStart(6)} ${b.within ? 'yes' : 'NO'}`);
      });
    console.log(`load average (1 min) at each bench: ${results.map((r) => r.load.toFixed(2)).join(', ')} on ${(await import('node:os')).availableParallelism()} CPUs`);
  }
} finally {
  if (!a.keep) rmSync(work, { recursive: true, force: true });
}
