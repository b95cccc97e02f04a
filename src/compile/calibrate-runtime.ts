/**
 * The fixed costs of nanomind's own runtime on this machine, measured for `bench --calibrate` on models of
 * calibrate's own (never the bundle a plan will be checked against):
 *
 * - tokenLoopMs: per generated token, what the runtime spends beyond the ORT calls themselves: a tiny
 *   text LM (DEFAULT_TEXT of src/fixtures: 2 layers, hidden 64) generates `steps` greedy tokens through
 *   `ChatSession`, and the same decoder file generates the same number of steps in a plain
 *   onnxruntime-node loop written here (present → past, argmax of the last row). The difference per step is
 *   the runtime's share: feed checks, KV hand-over, the wrapper around session.run, sampling, stop checks.
 * - prefillLoopMs: the same comparison for the prompt's step (ChatSession's prefill against the plain loop's
 *   first call): setting up the cache and handing over P rows of KV cost more than a decode step's one row.
 * - imagePreprocessMs + imagePreprocessMsPerMpx: one image through the runtime's generic image processor:
 *   a 384 × 384 PNG decoded, resized (bicubic, as SigLIP / CLIP configs ask), rescaled and normalized, once
 *   to 64 × 64 and once to 320 × 320. The cost grows with the output's pixels (resize, normalize), so the
 *   two give a fixed part (decode) and a part per output megapixel; the cost model applies them at the
 *   size the vision brick takes.
 *
 * Each is the best of several runs after a warm-up, as calibrate's other rates are: the machine's cost
 * without other processes' preemption (on a loaded machine a median of 20 ms runs moves by 2× between
 * calls; the minimum of this deterministic work does not).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { buildTinyTextLm } from '../fixtures/text-lm.js';
import { partition } from '../partition/index.js';
import { ORT_LOG } from '../onnx/ort-log.js';
import { openModel } from '../run/model.js';
import { ChatSession } from '../run/generation/chat-session.js';
import { preprocessImage } from '../run/inputs/image.js';
import { loadOrt } from '../run/backends/ort-cpu.js';
import { makeTemp, removeTemp } from '../util/temp.js';

export interface RuntimeMeasurements {
  readonly tokenLoopMs: number;
  /** The same difference for the prompt's step (embedding the prompt, the empty cache, the KV hand-over of P rows). */
  readonly prefillLoopMs: number;
  readonly imagePreprocessMs: number;
  readonly imagePreprocessMsPerMpx: number;
}

/** Prompt and generated tokens of the loop measurement. */
const PROMPT = 16, STEPS = 48;
/** The synthetic image's side and the two sides it is resized to. */
export const PREPROCESS_FROM = 384, PREPROCESS_TO = [64, 320] as const;

const best = (xs: readonly number[]) => Math.min(...xs);

export async function measureRuntime(o: { runs: number; threads: number }): Promise<RuntimeMeasurements> {
  const runs = Math.max(3, o.runs);
  return { ...await runtimeLoop(runs, o.threads), ...await imagePreprocess(Math.max(7, runs)) };
}

async function runtimeLoop(runs: number, threads: number): Promise<{ tokenLoopMs: number; prefillLoopMs: number }> {
  const tmp = await makeTemp('calibrate-loop');
  try {
    const src = join(tmp, 'lm');
    await buildTinyTextLm(src, { seed: 7 });
    const bricks = join(tmp, 'bricks');
    await partition({ input: src, out: bricks, verify: false });
    await rm(src, { recursive: true });
    const prompt = Array.from({ length: PROMPT }, (_, i) => (5 * i + 11) % 300);
    const m = await openModel(bricks, { threads });
    const runtime: number[] = [], prefill: number[] = [];
    let file: string;
    try {
      const s = new ChatSession(m.set, { maxContext: PROMPT + STEPS + 1 });
      for (let r = 0; r <= runs; r++) {
        s.reset();
        const g = await s.generate({ inputIds: prompt }, { maxNewTokens: STEPS + 1, stopTokenIds: [] });
        if (r > 0) { runtime.push(g.stats.decodeMs / STEPS); prefill.push(g.stats.prefillMs); } // r = 0 is the warm-up
      }
      file = join(bricks, m.set.decoder.brick.file);
    } finally {
      await m.close();
    }
    const plain = await plainOrtStepMs(file, prompt, runs, threads);
    // Negative only when the two differ by less than the noise: the runtime then adds nothing measurable.
    return { tokenLoopMs: Math.max(0, best(runtime) - plain.stepMs), prefillLoopMs: Math.max(0, best(prefill) - plain.prefillMs) };
  } finally {
    await removeTemp(tmp);
  }
}

/** The same greedy generation in a bare onnxruntime-node loop: ms of the prompt's call and per decode step (best of `runs`). */
async function plainOrtStepMs(file: string, prompt: readonly number[], runs: number, threads: number): Promise<{ prefillMs: number; stepMs: number }> {
  const ort = await loadOrt();
  const s: InferenceSession = await ort.InferenceSession.create(file, {
    ...ORT_LOG, executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: threads,
  });
  try {
    const past = s.inputNames.filter((n) => n.startsWith('past_key_values.'));
    const meta = s.inputMetadata.find((x) => x.name === past[0]);
    const dims = meta && meta.isTensor ? meta.shape : [];
    const heads = Number(dims[1]), headDim = Number(dims[3]);
    const i64 = (xs: readonly number[]) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);
    const times: number[] = [], firsts: number[] = [];
    for (let r = 0; r <= runs; r++) {
      const kv: Record<string, Tensor> = Object.fromEntries(past.map((n) => [n, new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim])]));
      let ids = [...prompt], len = 0, t0 = performance.now();
      for (let step = 0; step <= STEPS; step++) {
        if (step === 1) { if (r > 0) firsts.push(performance.now() - t0); t0 = performance.now(); } // step 0 is the prefill
        const out = await s.run({
          ...kv, input_ids: i64(ids), attention_mask: i64(Array(len + ids.length).fill(1)),
          position_ids: i64(ids.map((_, k) => len + k)),
        });
        for (const n of past) kv[n] = out[n.replace('past_key_values.', 'present.')]!;
        len += ids.length;
        const logits = out.logits!.data as Float32Array, V = out.logits!.dims.at(-1)!;
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[logits.length - V + v]! > logits[logits.length - V + best]!) best = v;
        ids = [best];
      }
      if (r > 0) times.push((performance.now() - t0) / STEPS);
    }
    return { prefillMs: best(firsts), stepMs: best(times) };
  } finally {
    await s.release();
  }
}

async function imagePreprocess(runs: number): Promise<{ imagePreprocessMs: number; imagePreprocessMsPerMpx: number }> {
  const w = PREPROCESS_FROM, px = Buffer.alloc(w * w * 3);
  for (let i = 0; i < w * w; i++) { px[3 * i] = i % w; px[3 * i + 1] = (i / w) | 0; px[3 * i + 2] = (i * 7) & 255; }
  const png = new Uint8Array(await sharp(px, { raw: { width: w, height: w, channels: 3 } }).png().toBuffer());
  const at = async (side: number) => {
    const cfg = { do_resize: true, size: { height: side, width: side }, resample: 3, do_rescale: true, rescale_factor: 1 / 255,
      do_normalize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], do_convert_rgb: true };
    const times: number[] = [];
    for (let r = 0; r <= runs; r++) {
      const t0 = performance.now();
      await preprocessImage(png, cfg);
      if (r > 0) times.push(performance.now() - t0);
    }
    return best(times);
  };
  const [a, b] = PREPROCESS_TO;
  const ta = await at(a), tb = await at(b);
  const perMpx = Math.max(0, (tb - ta) / ((b * b - a * a) / 1e6));
  return { imagePreprocessMs: Math.max(0, ta - perMpx * (a * a) / 1e6), imagePreprocessMsPerMpx: perMpx };
}
