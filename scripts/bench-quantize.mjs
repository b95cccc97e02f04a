#!/usr/bin/env node
// Benchmark (not a test): time and peak RSS to quantize a brick with ≥ N GB of float weights.
//
//   node scripts/bench-quantize.mjs [--gb 1] [--runs 1] [--format w4a16-g32] [--algo rtn] [--eval] [--keep DIR]
//
// Generates a LLaVA-style split model whose decoder brick alone holds ≥ N GB of float32 external
// weights (Qwen2-like shapes: hidden 2048, intermediate 5632, vocab 32000), partitions it (adopted
// byte for byte), then runs `quantize` on it in a child process under /usr/bin/time: the decoder and
// the embedding go to --format, the vision brick stays fp32. Without --eval no accuracy is measured,
// so the figure is the quantizer's own streaming cost; with --eval ONNX Runtime also loads the float
// and quantized bricks to compare them.
//
// Everything goes to one temp folder (the children's TMPDIR too), removed on success, failure and
// Ctrl-C unless --keep names a folder to keep.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

// ONNX Runtime telemetry off for this script and every process it starts (src/util/no-telemetry.ts).
process.env.ORT_DISABLE_TELEMETRY = '1';

const here = new URL('.', import.meta.url).pathname;
const dist = join(here, '..', 'dist');
const { values } = parseArgs({ options: {
  gb: { type: 'string', default: '1' }, runs: { type: 'string', default: '1' }, format: { type: 'string', default: 'w4a16-g32' },
  algo: { type: 'string', default: 'rtn' }, eval: { type: 'boolean', default: false }, keep: { type: 'string' },
} });
const machine = `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-bench-quantize-'));
const cleanup = () => { if (!values.keep) rmSync(dir, { recursive: true, force: true }); };
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { cleanup(); process.exit(sig === 'SIGINT' ? 130 : 143); });
// Temp files of the children (quantize's calibration scratch, atomic writes) land in `dir` as well.
const childTmp = join(dir, 'tmp');
mkdirSync(childTmp, { recursive: true });
const env = { ...process.env, TMPDIR: childTmp, CI: 'true' };
const node = (script, args = []) => spawnSync(process.execPath, ['--max-old-space-size=16384', '--input-type=module', '-e', script, ...args], { stdio: 'inherit', env });
/** A failed step: reported, then the temp folder goes with the normal exit path (no process.exit past `finally`). */
class StepFailed extends Error {}

try {
  const gb = Number(values.gb);
  const hidden = 2048, intermediate = 5632, vocab = 32000, kv = 512;
  const perLayer = 4 * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * intermediate);
  const layers = Math.max(1, Math.ceil((gb * 1e9 - 4 * vocab * hidden) / perLayer));
  const text = { hidden, heads: 16, kvHeads: 4, headDim: 128, intermediate, vocab, layers };
  let gen = node(`
    const { buildTinyLlava } = await import(${JSON.stringify(join(dist, 'fixtures', 'index.js'))});
    const { partition } = await import(${JSON.stringify(join(dist, 'partition', 'index.js'))});
    await buildTinyLlava(${JSON.stringify(join(dir, 'model'))}, { externalThreshold: 1024, text: ${JSON.stringify(text)} });
    await partition({ input: ${JSON.stringify(join(dir, 'model'))}, out: ${JSON.stringify(join(dir, 'bricks'))} });
  `);
  if (gen.status !== 0) throw new StepFailed(`generating the model failed (exit ${gen.status ?? gen.signal})`);
  const bricks = join(dir, 'bricks');
  const decoderBytes = readdirSync(bricks).filter((f) => f.startsWith('decoder')).reduce((s, f) => s + statSync(join(bricks, f)).size, 0);
  console.log(`decoder brick: ${layers} layers, hidden ${hidden}, ${(decoderBytes / 1e9).toFixed(2)} GB float32 on disk; embed ${(4 * vocab * hidden / 1e9).toFixed(2)} GB`);
  // The real CLI, as a user runs it (a script written to the temp dir could not resolve the repo's packages).
  const cli = join(here, '..', 'bin', 'nanomind.js');
  const runs = [];
  for (let i = 0; i < Number(values.runs); i++) {
    const out = join(dir, `q-${i}`);
    const args = [cli, 'quantize', bricks, '-o', out, '--brick', 'vision=fp32', '--brick', `embed=${values.format}`, '--brick', `decoder=${values.format}`,
      '--algo', values.algo, '--json', ...(values.eval ? ['--tokens', '0', '--calib', '4', '--held-out', '1', '--no-compare'] : ['--no-eval'])];
    const t0 = performance.now();
    const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, ...args], { encoding: 'utf8', cwd: join(here, '..'), maxBuffer: 1 << 26, env });
    const seconds = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new StepFailed(`quantize failed (exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
    const rssMb = Number(r.stderr.trim().split('\n').pop()) / 1024;
    const report = JSON.parse(r.stdout);
    const d = report.bricks.find((b) => b.kind === 'decoder');
    runs.push({ seconds, rssMb });
    console.log(`run ${i + 1}: ${seconds.toFixed(1)} s, peak RSS ${rssMb.toFixed(0)} MB; decoder ${(d.bytesBefore / 1e9).toFixed(2)} GB → ${(d.bytesAfter / 1e6).toFixed(0)} MB `
      + `(${(d.bytesBefore / d.bytesAfter).toFixed(2)}×, ${d.seconds.toFixed(1)} s)${d.cosine !== null ? `, cosine ${d.cosine.toFixed(4)}, SQNR ${d.sqnrDb.toFixed(1)} dB` : ''}`);
    rmSync(out, { recursive: true, force: true });
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`median: ${median(runs.map((r) => r.seconds)).toFixed(1)} s, peak RSS ${median(runs.map((r) => r.rssMb)).toFixed(0)} MB (${values.format}, ${values.algo}${values.eval ? ', with evaluation' : ''}); largest tensor ${(4 * vocab * hidden / 2 ** 20).toFixed(0)} MiB`);
  console.log(`machine: ${machine}`);
} catch (e) {
  if (!(e instanceof StepFailed)) throw e;
  console.error(e.message);
  process.exitCode = 1;
} finally {
  cleanup();
}
