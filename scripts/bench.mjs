#!/usr/bin/env node
// Benchmarks (not tests): `npm run bench -- <name> [options]`. Prints medians and the machine.
// partition-large [--gb N] [--runs N] [--verify] [--keep DIR]: time and peak RSS to partition a generated model with
//   ≥ N GB of external weights (default 1), measured in a child process so the generator's memory
//   does not count.
// image-stream [--images N] [--runs N] [--max-tokens N] [--threads N] [--keep DIR]: `nanomind run
//   --images` on N distinct PNGs with the vision encoder in a worker thread (encoder ∥ decoder) and with
//   --no-overlap (one image at a time); medians of the runs, images/s both ways and the speed-up.
// boundaries [--runs N]: the per-request copies at brick boundaries: float32 → float16 rows for a decoder
//   taking float16 inputs_embeds (per value, and per 896-wide Qwen2-0.5B row), and encoder features copied
//   into a SharedArrayBuffer ring slot (onnxruntime-node rejects SAB-backed tensors) at three feature sizes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, readdirSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

// ONNX Runtime telemetry off for this script and every process it starts (src/util/no-telemetry.ts).
process.env.ORT_DISABLE_TELEMETRY = '1';

const here = new URL('.', import.meta.url).pathname;
const { positionals, values } = parseArgs({ allowPositionals: true, options: { gb: { type: 'string', default: '1' }, keep: { type: 'string' }, runs: { type: 'string', default: '3' }, verify: { type: 'boolean', default: false }, images: { type: 'string', default: '16' }, 'max-tokens': { type: 'string', default: '16' }, threads: { type: 'string' } } });
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
} else if (positionals[0] === 'image-stream') {
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'nanomind-bench-'));
  try {
    // Sized so that encoding one image and answering it (16 tokens) each take tens of ms on a small CPU.
    const spec = { hidden: 256, text: { layers: 8 }, vision: { hidden: 384, layers: 8, heads: 6, intermediate: 1536, imageSize: 64, patchSize: 8 } };
    const n = Number(values.images);
    const gen = spawnSync(process.execPath, ['--input-type=module', '-e', `
      const { buildTinyLlava } = await import(${JSON.stringify(join(here, '..', 'dist', 'fixtures', 'index.js'))});
      const { partition } = await import(${JSON.stringify(join(here, '..', 'dist', 'partition', 'index.js'))});
      const { default: sharp } = await import('sharp');
      await buildTinyLlava(${JSON.stringify(join(dir, 'model'))}, ${JSON.stringify(spec)});
      await partition({ input: ${JSON.stringify(join(dir, 'model'))}, out: ${JSON.stringify(join(dir, 'bricks'))} });
      for (let i = 0; i < ${n}; i++) {
        const px = Buffer.alloc(96 * 96 * 3);
        for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) * 7919) & 255;
        await sharp(px, { raw: { width: 96, height: 96, channels: 3 } }).png().toFile(${JSON.stringify(join(dir, 'img-'))} + String(i).padStart(3, '0') + '.png');
      }
    `], { stdio: 'inherit', cwd: join(here, '..') });
    if (gen.status !== 0) process.exit(gen.status ?? 1);
    const images = readdirSync(dir).filter((f) => f.startsWith('img-')).sort().map((f) => join(dir, f));
    const threads = values.threads ? ['--threads', values.threads] : [];
    console.log(`model: ${JSON.stringify(spec)}; ${images.length} images, ${values['max-tokens']} new tokens each${threads.length ? `, ${threads.join(' ')}` : ''}`);
    const median = (xs) => { const s = [...xs].sort((a, b) => a - b), k = s.length >> 1; return s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2; };
    const modes = { overlap: [], sequential: [] };
    let reference;
    for (let i = 0; i < Number(values.runs); i++)
      for (const mode of ['overlap', 'sequential']) {
        const t0 = performance.now();
        const r = spawnSync(process.execPath, [join(here, '..', 'bin', 'nanomind.js'), 'run', join(dir, 'bricks'), '--images', ...images,
          '--prompt', 'Describe the picture in a few words.', '--max-tokens', values['max-tokens'], '--temperature', '0', '--json', ...threads,
          ...(mode === 'sequential' ? ['--no-overlap'] : [])], { encoding: 'utf8' });
        const wallMs = performance.now() - t0;
        if (r.status !== 0) { console.error(r.stdout, r.stderr); process.exit(1); }
        const j = JSON.parse(r.stdout);
        const tokens = JSON.stringify(j.answers.map((a) => a.tokens));
        if ((reference ??= tokens) !== tokens) { console.error(`${mode} run ${i + 1}: answers differ from the first run`); process.exit(1); }
        const run = {
          wallMs, streamMs: j.totalMs, imagesPerS: j.imagesPerS, startupMs: j.encoderStartupMs ?? 0,
          encodeMs: median(j.answers.map((a) => a.stats.encodeMs)), answerMs: median(j.answers.map((a) => a.stats.totalMs - a.stats.encodeMs)),
        };
        modes[mode].push(run);
        console.log(`${mode} run ${i + 1}: process ${run.wallMs.toFixed(0)} ms, stream ${run.streamMs.toFixed(0)} ms = ${run.imagesPerS.toFixed(2)} images/s`
          + `${mode === 'overlap' ? ` (worker start ${run.startupMs.toFixed(0)} ms, ${j.encoderThreads} thread(s))` : ''}; per image: encode ${run.encodeMs.toFixed(1)} ms, answer ${run.answerMs.toFixed(1)} ms`);
      }
    const m = (mode, k) => median(modes[mode].map((r) => r[k]));
    const perS = (mode, k) => images.length / (m(mode, k) / 1000);
    console.log(`median stream:  encoder ∥ decoder ${perS('overlap', 'streamMs').toFixed(2)} images/s, sequential ${perS('sequential', 'streamMs').toFixed(2)} images/s, speed-up ${(m('sequential', 'streamMs') / m('overlap', 'streamMs')).toFixed(2)}×`);
    console.log(`median process: encoder ∥ decoder ${perS('overlap', 'wallMs').toFixed(2)} images/s, sequential ${perS('sequential', 'wallMs').toFixed(2)} images/s, speed-up ${(m('sequential', 'wallMs') / m('overlap', 'wallMs')).toFixed(2)}× (node start + model open included)`);
    console.log(`median per image: encode ${m('overlap', 'encodeMs').toFixed(1)} / ${m('sequential', 'encodeMs').toFixed(1)} ms, answer ${m('overlap', 'answerMs').toFixed(1)} / ${m('sequential', 'answerMs').toFixed(1)} ms (overlap / sequential); worker start ${m('overlap', 'startupMs').toFixed(0)} ms`);
    console.log(`machine: ${machine}`);
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
} else if (positionals[0] === 'boundaries') {
  const { floatToHalf } = await import(new URL('../dist/onnx/dtype.js', import.meta.url).href);
  const runs = Number(values.runs);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const time = (fn) => median(Array.from({ length: Math.max(runs, 5) }, () => { const t = performance.now(); fn(); return performance.now() - t; }));
  const n = 896 * 1000;
  const src = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
  const half = new Uint16Array(n);
  const ms = time(() => { for (let i = 0; i < n; i++) half[i] = floatToHalf(src[i]); });
  console.log(`float32 → float16 at the decoder boundary: ${(ms * 1e6 / n).toFixed(1)} ns/value, ${(ms * 1000 / 1000).toFixed(1)} µs per 896-wide row (median)`);
  for (const [rows, hidden] of [[576, 4096], [576, 864], [9, 4096]]) {
    const feats = Float32Array.from({ length: rows * hidden }, (_, i) => i % 7);
    const slot = new Float32Array(new SharedArrayBuffer(feats.byteLength));
    const c = time(() => slot.set(feats));
    console.log(`encoder features → SharedArrayBuffer slot: ${(feats.byteLength / 1e6).toFixed(2)} MB (${rows}×${hidden} float32) in ${c.toFixed(2)} ms (median)`);
  }
  console.log(`machine: ${machine}`);
} else {
  console.error('usage: npm run bench -- partition-large [--gb N] [--runs N] [--verify] [--keep DIR]');
  console.error('       npm run bench -- image-stream [--images N] [--runs N] [--max-tokens N] [--threads N] [--keep DIR]');
  console.error('       npm run bench -- boundaries [--runs N]');
  process.exit(2);
}
