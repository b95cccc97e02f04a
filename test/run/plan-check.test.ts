/**
 * plan.json's predictions beside bench's measurements: the derived rates checked against a hand
 * computation from the plan's stage times, and the ±25 % verdict at its edges. `bench --against-plan`
 * refuses a folder that is not a bundle.
 */
import { describe, expect, it } from 'vitest';
import type { Plan } from '../../src/formats/bundle.js';
import type { BenchResult } from '../../src/run/bench.js';
import { planVsMeasured, renderPlanCheck } from '../../src/run/plan-check.js';
import { brickSetDir } from './helpers.js';
import { cli } from '../cli-helper.js';

const stage = (id: string, phase: string, ms: number, repeat?: string) => ({ id, brick: id.split(':').pop(), phase, accelerator: 'cpu', dependsOn: [], repeat, predicted: { ms, mJ: null } });
const plan = {
  target: 'host', workload: { images: 2, audioClips: 0, promptTokens: 32, outputTokens: 64, maxContext: 512 },
  ringBuffers: [{ from: 'vision.image_features', to: 'decoder.inputs_embeds', slots: 2, slotBytes: 4096, tokens: 16, hidden: 64, dtype: 'float32', why: '' }],
  stages: [stage('encode:vision', 'encode', 10, 'per-image'), stage('encode:audio', 'encode', 7, 'per-clip'), stage('embed:embed', 'embed', 1),
    stage('prefill:decoder', 'prefill', 63), stage('embed-token:embed', 'embed', 0.5, 'per-token'), stage('decode:decoder', 'decode', 3.5, 'per-token')],
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

  it("counts only the rows of the media the plan's request has (an audio ring adds none when it has no clip)", () => {
    const withAudio = { ...plan, ringBuffers: [...plan.ringBuffers, { from: 'audio.audio_features', to: 'decoder.inputs_embeds', slots: 2, slotBytes: 4096, tokens: 25, hidden: 64, dtype: 'float32', why: '' }] } as unknown as Plan;
    expect(planVsMeasured(withAudio, bench(12.5, 760, 250, 374)).rows[1]).toMatchObject({ what: 'prefill tok/s', predicted: 1000 });
    const oneClip = { ...withAudio, workload: { ...withAudio.workload, audioClips: 1 } } as unknown as Plan;
    // 32 + 2 × 16 + 1 × 25 = 89 tokens in 64 ms
    expect(planVsMeasured(oneClip, bench(12.5, 760, 250, 374)).rows[1]!.predicted).toBeCloseTo(89000 / 64, 6);
  });

  it('bench --against-plan on a brick set (no bundle.json): E_USAGE, exit 2', async () => {
    const r = await cli('bench', await brickSetDir('llava'), '--against-plan', '--json');
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('E_USAGE');
  });
});
