import { join } from 'node:path';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import type { TargetProfile } from '../compile/targets.js';
import { fail } from '../errors.js';
import type { BenchResult, Spread } from '../run/bench.js';
import { ENGINE_OPTION, parseEngine, parseNumber } from './flags.js';
import { bytes, emit, table } from './output.js';
import { stageProgress } from './progress.js';
import { withRunnableDir } from './open-model.js';

interface BenchFlags {
  runs?: string; promptTokens?: string; newTokens?: string; image?: string; audio?: string; threads?: string; engine?: string; streamImages?: string; json?: boolean; powerSupply?: string; againstPlan?: boolean;
  calibrate?: boolean; out?: string; mib?: string;
}

/** Flags that only mean something for a model run, and the ones only for --calibrate. */
const MODEL_ONLY = { promptTokens: '--prompt-tokens', newTokens: '--new-tokens', image: '--image', audio: '--audio', streamImages: '--stream-images', engine: '--engine' } as const;
const CALIBRATE_ONLY = { out: '--out', mib: '--mib' } as const;

export const benchVerb = (program: Command) => program
  .command('bench [model]')
  .description('measure a brick set or bundle on this machine: encoder, prefill, decode, TTFT, memory, prefix reuse; '
    + 'or, with --calibrate, measure the machine itself and write a `host` target profile')
  .option('--runs <n>', 'measured runs after one warm-up (with --calibrate: best of N)', '5')
  .option('--prompt-tokens <n>', 'text tokens in the prompt (an image or clip adds its rows)', '128')
  .option('--new-tokens <n>', 'tokens generated per run (eos ignored)', '32')
  .option('--image <file>', 'image for the vision encoder (default: a synthetic one when the model has a vision encoder)')
  .option('--audio <file>', 'WAV clip for the audio encoder (default: a synthetic tone when the model has only audio)')
  .option('--stream-images <n>', 'images in the overlapped vs sequential image stream (0 = skip)', '4')
  .option('--threads <n>', 'CPU threads per brick (default: ONNX Runtime decides; with --calibrate: all cores)')
  .option(...ENGINE_OPTION)
  .option('--calibrate', 'measure this machine (memory read, fp32 and int8 matmul, per-call, per-node and per-tensor overheads, the runtime loop per token, image preprocessing) and write a target profile')
  .option('-o, --out <file>', 'with --calibrate: the profile to write, atomically (default: host.json in the current directory)')
  .option('--mib <n>', 'with --calibrate: MiB each memory-read thread sums (default: 256)')
  .option('--against-plan', "a bundle: run plan.json's reference request and show the plan's predictions beside the measurements (±25 %)")
  .option('--power-supply <dir>', 'where the battery is read for the image stream (default /sys/class/power_supply)')
  .option('--json', 'print the result as JSON')
  .action(async (model: string | undefined, f: BenchFlags, cmd: Command) => {
    const given = (key: string) => cmd.getOptionValueSource(key) === 'cli';
    if (f.calibrate) {
      if (model !== undefined) throw fail('E_USAGE', `bench --calibrate measures this machine and takes no model (got '${model}')`, { hint: 'drop the model, or drop --calibrate' });
      const wrong = Object.entries(MODEL_ONLY).filter(([k]) => given(k)).map(([, flag]) => flag);
      if (wrong.length) throw fail('E_USAGE', `bench --calibrate: ${wrong.join(', ')} only apply to a model run`);
      return calibrate(f);
    }
    if (model === undefined) throw fail('E_USAGE', 'bench: missing the model (a brick set, bundle or model folder)', { hint: 'nanomind bench <bricks-dir | bundle>, or nanomind bench --calibrate to measure this machine' });
    const wrong = Object.entries(CALIBRATE_ONLY).filter(([k]) => given(k)).map(([, flag]) => flag);
    if (wrong.length) throw fail('E_USAGE', `bench: ${wrong.join(', ')} only apply with --calibrate`);
    const { bench } = await import('../run/bench.js');
    const runs = parseNumber('--runs', f.runs, { min: 1, integer: true });
    const { powerMonitor, thresholdsFrom, transitionLine } = await import('../run/power/policy.js');
    // Thresholds from the bundle's plan.json when bench runs a bundle (compile's defaults otherwise).
    const { readBundle, BUNDLE_FILE } = await import('../formats/bundle.js');
    const plan = existsSync(join(model, BUNDLE_FILE)) ? (await readBundle(model, { checkHashes: false })).plan : undefined;
    if (f.againstPlan && !plan) throw fail('E_USAGE', `bench --against-plan: ${model} is not a compiled bundle (no ${BUNDLE_FILE})`, { hint: 'nanomind compile <bricks> --target host.json -o bundle' });
    // The plan's reference request: its prompt tokens and output tokens (images come with the model).
    if (f.againstPlan && plan) { f.promptTokens = String(plan.workload.promptTokens); f.newTokens = String(plan.workload.outputTokens); }
    const power = powerMonitor({ dir: f.powerSupply, thresholds: thresholdsFrom(plan?.powerPolicy), onTransition: (t) => process.stderr.write(`${transitionLine(t)}\n`) });
    const runnable = await withRunnableDir(model);
    const progress = stageProgress(undefined, f.json);
    let r: BenchResult;
    try {
      r = await bench({
        dir: runnable.dir, image: f.image, audio: f.audio, runs,
        promptTokens: parseNumber('--prompt-tokens', f.promptTokens, { min: 1, integer: true }),
        newTokens: parseNumber('--new-tokens', f.newTokens, { min: 1, integer: true }),
        streamImages: parseNumber('--stream-images', f.streamImages, { min: 0, integer: true }),
        threads: parseNumber('--threads', f.threads, { min: 1, integer: true }), engine: parseEngine(f.engine),
        onStage: (s) => progress.stage(s), power,
      });
    } finally {
      progress.stop();
      await runnable.cleanup();
    }
    if (f.againstPlan && plan) {
      const { planVsMeasured, renderPlanCheck } = await import('../run/plan-check.js');
      const check = planVsMeasured(plan, r);
      emit({ ...r, againstPlan: check }, f.json, (x) => `${renderBench(x)}\n\n${renderPlanCheck(check)}`);
      return;
    }
    emit(r, f.json, renderBench);
  });

async function calibrate(f: BenchFlags): Promise<void> {
  const opts = {
    mib: parseNumber('--mib', f.mib ?? '256', { min: 1, integer: true }),
    runs: parseNumber('--runs', f.runs, { min: 1, integer: true }),
    threads: parseNumber('--threads', f.threads, { min: 1, integer: true }),
  };
  const { calibrateHost, writeTargetFile } = await import('../compile/calibrate.js');
  const progress = stageProgress(undefined, f.json);
  let profile: TargetProfile;
  try {
    profile = await calibrateHost({ ...opts, onStage: (s) => progress.stage(s) });
  } finally {
    progress.stop();
  }
  const file = await writeTargetFile(f.out ?? 'host.json', profile);
  emit(profile, f.json, (p) => renderCalibration(p, file));
}

/** The measured numbers of a calibrated profile, and where it was written. */
export function renderCalibration(p: TargetProfile, file: string): string {
  const cpu = p.accelerators[0];
  const q = (x: { value: number | null } | undefined) => (x && x.value !== null ? x.value : '-');
  let out = `${p.title}\n${p.sources.measured?.title ?? ''}\n\n`;
  out += table(['metric', 'value', 'unit'], [
    ['memory read', q(p.memory.sustainedGBps), 'GB/s'],
    ['fp32 matmul', q(cpu.peakGops.fp32), 'GFLOPS'],
    ['int8 matmul (MatMulNBits)', q(cpu.peakGops.int8), 'GOPS'],
    ['launch overhead (per call)', q(cpu.launchOverheadMs), 'ms'],
    ['node overhead (per node)', q(cpu.nodeOverheadMs), 'ms'],
    ['node element cost (per node × element)', q(cpu.nodeElementNs), 'ns'],
    ['tensor overhead (per input/output)', q(cpu.tensorOverheadMs), 'ms'],
    ['runtime loop (per token)', q(p.runtime?.tokenLoopMs), 'ms'],
    ['image preprocessing (per image)', q(p.runtime?.imagePreprocessMs), 'ms'],
    ['image preprocessing (per Mpx)', q(p.runtime?.imagePreprocessMsPerMpx), 'ms/Mpx'],
    ['cores', q(cpu.cores), ''],
    ['memory', p.memory.totalBytes.value === null ? '-' : bytes(p.memory.totalBytes.value), ''],
  ]);
  out += `\nwrote ${file}\nuse it with: nanomind compile <bricks-dir> --target ${file} -o <bundle>\n`;
  return out;
}

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
  if (s) out += `image stream (${s.images} images): ${n(s.overlapImagesPerS, 2)} images/s with encoder ∥ decoder vs ${n(s.sequentialImagesPerS, 2)} sequential (×${n(s.speedup, 2)}); `
    + `without the worker's ${n(s.workerStartMs, 0)} ms start ${n(s.overlapSteadyImagesPerS, 2)} images/s\n`;
  return out;
}
