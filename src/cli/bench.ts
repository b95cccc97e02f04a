import type { Command } from 'commander';
import type { BenchResult, Spread } from '../run/bench.js';
import { parseNumber } from './flags.js';
import { emit, table } from './output.js';
import { stageProgress } from './progress.js';

interface BenchFlags { runs?: string; promptTokens?: string; newTokens?: string; image?: string; audio?: string; threads?: string; streamImages?: string; json?: boolean }

export const benchVerb = (program: Command) => program
  .command('bench <model>')
  .description('measure a brick set or bundle on this machine: encoder, prefill, decode, TTFT, memory, prefix reuse')
  .option('--runs <n>', 'measured runs after one warm-up', '5')
  .option('--prompt-tokens <n>', 'text tokens in the prompt (an image or clip adds its rows)', '128')
  .option('--new-tokens <n>', 'tokens generated per run (eos ignored)', '32')
  .option('--image <file>', 'image for the vision encoder (default: a synthetic one when the model has a vision encoder)')
  .option('--audio <file>', 'WAV clip for the audio encoder (default: a synthetic tone when the model has only audio)')
  .option('--stream-images <n>', 'images in the overlapped vs sequential image stream (0 = skip)', '4')
  .option('--threads <n>', 'CPU threads per brick (default: ONNX Runtime decides)')
  .option('--json', 'print the result as JSON')
  .action(async (model: string, f: BenchFlags) => {
    const { bench } = await import('../run/bench.js');
    const progress = stageProgress(8, f.json);
    let r: BenchResult;
    try {
      r = await bench({
        dir: model, image: f.image, audio: f.audio,
        runs: parseNumber('--runs', f.runs, { min: 1, integer: true }),
        promptTokens: parseNumber('--prompt-tokens', f.promptTokens, { min: 1, integer: true }),
        newTokens: parseNumber('--new-tokens', f.newTokens, { min: 1, integer: true }),
        streamImages: parseNumber('--stream-images', f.streamImages, { min: 0, integer: true }),
        threads: parseNumber('--threads', f.threads, { min: 1, integer: true }),
        onStage: (s) => progress.stage(s),
      });
    } finally {
      progress.stop();
    }
    emit(r, f.json, renderBench);
  });

const n = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
const row = (name: string, s: Spread, unit: string, d = 1): (string | number)[] => [name, n(s.median, d), n(s.min, d), n(s.max, d), unit];

export function renderBench(r: BenchResult): string {
  const m = r.machine;
  let out = `machine: ${m.cpu} × ${m.cores}, ${m.memoryGb} GiB, ${m.os}, Node ${m.node}\n`;
  out += `model: ${r.model.dir} (${r.model.bricks.join(', ')})${r.model.media ? `, ${r.model.media}` : ''}\n`;
  out += `${r.settings.runs} runs after a warm-up, ${r.promptTokens} prompt tokens (${r.settings.promptTokens} text), ${r.settings.newTokens} new tokens, greedy, `
    + `threads ${r.settings.threads ?? 'ORT default'}\n\n`;
  out += table(['metric', 'median', 'min', 'max', 'unit'], [
    ...(r.encodeMs ? [row('encoder (preprocess + bricks)', r.encodeMs, 'ms')] : []),
    row('TTFT', r.ttftMs, 'ms'),
    row('prefill', r.prefillTokPerS, 'tok/s'),
    row('decode', r.decodeTokPerS, 'tok/s'),
    row('end to end', r.totalMs, 'ms'),
    ...Object.entries(r.bricks).map(([k, s]) => row(`brick ${k}`, s, 'ms')),
  ]);
  out += `peak RSS: ${n(r.peakRssMb, 0)} MB\n`;
  const p = r.prefixReuse;
  out += `prefix reuse (second turn, ${p.promptTokens} tokens): ${p.reusedTokens} tokens from the KV cache, TTFT ${n(p.reusedTtftMs.median)} ms `
    + `vs ${n(p.freshTtftMs.median)} ms from scratch (saves ${n(p.savedMs)} ms)\n`;
  const s = r.imageStream;
  if (s) out += `image stream (${s.images} images): ${n(s.overlapImagesPerS, 2)} images/s with encoder ∥ decoder vs ${n(s.sequentialImagesPerS, 2)} sequential (×${n(s.speedup, 2)})\n`;
  return out;
}
