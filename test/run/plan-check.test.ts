/**
 * plan.json's predictions beside bench's measurements: the derived rates checked against a hand
 * computation from the plan's stage times, and the ±25 % verdict at its edges. `bench --against-plan`
 * refuses a folder that is not a bundle.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { readBundle } from '../../src/formats/bundle.js';
import { partition } from '../../src/partition/index.js';
import { EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import type { Plan } from '../../src/formats/bundle.js';
import type { BenchResult } from '../../src/run/bench.js';
import { planVsMeasured, renderPlanCheck } from '../../src/run/plan-check.js';
import { brickSetDir } from './helpers.js';
import { cli } from '../cli-helper.js';

const stage = (id: string, phase: string, ms: number, repeat?: string, tokens?: number) => ({ id, brick: id.split(':').pop(), phase, accelerator: 'cpu', dependsOn: [], repeat, tokens, predicted: { ms, mJ: null } });
const plan = {
  target: 'host', workload: { images: 2, audioClips: 0, promptTokens: 32, outputTokens: 64, maxContext: 512 },
  ringBuffers: [{ from: 'vision.image_features', to: 'decoder.inputs_embeds', slots: 2, slotBytes: 4096, tokens: 16, hidden: 64, dtype: 'float32', why: '' }],
  stages: [stage('encode:vision', 'encode', 10, 'per-image'), stage('encode:audio', 'encode', 7, 'per-clip'), stage('embed:embed', 'embed', 1),
    stage('prefill:decoder', 'prefill', 63, undefined, 64), stage('embed-token:embed', 'embed', 0.5, 'per-token'), stage('decode:decoder', 'decode', 3.5, 'per-token')],
  predicted: { latencyMs: 300, energyMj: null, memoryBytes: 0 },
} as unknown as Plan;
const spread = (median: number) => ({ median, min: median, max: median });
const bench = (encode: number, prefill: number, decode: number, total: number, media = 'image (synthetic)') =>
  ({ model: { media }, encodeMs: spread(encode), prefillTokPerS: spread(prefill), decodeTokPerS: spread(decode), totalMs: spread(total) }) as unknown as BenchResult;

describe('planVsMeasured', () => {
  it('derives the rates from the stage times and judges each row at ±25 %', () => {
    // Prompt = 32 text + 2 images × 16 rows = 64 tokens in 1 (embed) + 63 (prefill) ms → 1000 tok/s; one token per
    // 0.5 (embed) + 3.5 (decode) ms → 250 tok/s; encode: bench encodes one image, the vision stage (10 ms), not the audio one.
    const c = planVsMeasured(plan, bench(12.5, 760, 250, 374));
    expect(c.rows.map((r) => [r.what, r.predicted])).toEqual([['encode ms', 10], ['prefill tok/s', 1000], ['decode tok/s', 250], ['latency ms', 300]]);
    expect(c.rows.map((r) => r.within)).toEqual([true, true, true, true]); // 1.25, 0.76, 1, 1.2467
    expect(c.allWithin).toBe(true);
    const off = planVsMeasured(plan, bench(12.6, 740, 250, 300));
    expect(off.rows.map((r) => r.within)).toEqual([false, false, true, true]);
    expect(renderPlanCheck(off)).toMatch(/encode ms .* OUTSIDE/);
    // A clip measured against the audio stage.
    expect(planVsMeasured(plan, bench(7, 1000, 250, 300, 'audio (synthetic)')).rows[0]).toMatchObject({ predicted: 7, ratio: 1 });
  });

  it("compile records the prefill's tokens: the prompt plus the rows of the request's own media only", async () => {
    // The embedded model sees and hears; its reference request is one image and no clip, so its 25 audio rows
    // must not count (they once did here, and the prefill rate looked 2× off).
    const out = join(await mkdtemp(join(tmpdir(), 'nanomind-plan-check-')), 'bundle');
    try {
      const bricks = join(dirname(out), 'bricks');
      await partition({ input: EMBEDDED_MODEL, out: bricks });
      const image = await compile({ bricks, target: 'host', out, rknn: 'skip' });
      const { plan } = await readBundle(image.out);
      const rows = (from: string) => plan.ringBuffers.find((r) => r.from.startsWith(from))!.tokens;
      expect(plan.workload).toMatchObject({ images: 1, audioClips: 0 });
      expect(plan.stages.find((s) => s.phase === 'prefill')!.tokens).toBe(plan.workload.promptTokens + rows('vision.'));
      const both = await compile({ bricks, target: 'host', out: `${out}-both`, rknn: 'skip', workload: { audioClips: 1 } });
      const p2 = (await readBundle(both.out)).plan;
      expect(p2.stages.find((s) => s.phase === 'prefill')!.tokens).toBe(p2.workload.promptTokens + rows('vision.') + rows('audio.'));
      // plan-check divides by exactly that count
      const c = planVsMeasured(plan, bench(10, 1000, 250, 300));
      const prefillMs = plan.stages.filter((s) => s.phase === 'prefill' || (s.phase === 'embed' && !s.repeat)).reduce((n, s) => n + s.predicted.ms, 0);
      expect(c.rows.find((r) => r.what === 'prefill tok/s')!.predicted).toBeCloseTo((plan.workload.promptTokens + rows('vision.')) / (prefillMs / 1000), 6);
    } finally {
      await rm(dirname(out), { recursive: true, force: true });
    }
  });

  it('bench --against-plan on a brick set (no bundle.json): E_USAGE, exit 2', async () => {
    const r = await cli('bench', await brickSetDir('llava'), '--against-plan', '--json');
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('E_USAGE');
  });
});
