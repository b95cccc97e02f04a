/**
 * calibrate → compile → bench --against-plan on the embedded model (models/shapes-vlm): the plan's
 * predictions for the reference request against what the runtime then measures on this machine.
 *
 * Oracle: the runtime's own wall-clock measurement (bench), which the prediction cannot see: the profile
 * comes from calibrate's micro-models (two Add chains, a Neg fan, a generated 2-layer text LM, a synthetic
 * PNG), never from this bundle.
 *
 * Tolerance: the ±25 % of the issue is for a quiet machine (`npm run bench:plan`, numbers in the report).
 * This test shares 2 cores with other jobs (load average 2 to 10 while it was written, and vitest runs a
 * second test file beside it), and calibrate takes the best of its runs, so load makes the measurement
 * slower than the prediction. Measured against bench's best run, decode and latency stayed within 4× at
 * load 10 with another heavy test file alongside: the bound is 5×. Encode and prefill are one interval
 * of a few ms each, which one preemption multiplies: 8×. What the bounds cannot hide: the prediction
 * without the fixed per-call costs (the profile minus them, what compile predicted before) must be
 * further from the same measurement than the prediction with them, for latency and encode (it is off by
 * ~3× and ~20× on a quiet machine).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrateHost, writeTargetFile } from '../../src/compile/calibrate.js';
import { compile } from '../../src/compile/index.js';
import type { TargetProfile } from '../../src/compile/targets.js';
import { readBundle } from '../../src/formats/bundle.js';
import { partition } from '../../src/partition/index.js';
import { bench } from '../../src/run/bench.js';
import { planVsMeasured } from '../../src/run/plan-check.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
/** Bounds on measured / predicted, both ways (see above). */
const FACTOR: Record<string, number> = { 'encode ms': 8, 'prefill tok/s': 8, 'decode tok/s': 5, 'latency ms': 5 };

let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-plan-vs-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

describe('simulator vs runtime on the embedded model (host target)', () => {
  it('predicts encode, prefill, decode and latency within the load bounds after calibrate; without the fixed costs it does not', async () => {
    const profile = await calibrateHost({ mib: 16, runs: 3, threads: 1 });
    const host = await writeTargetFile(join(work, 'host.json'), profile);
    // The same profile without what this change added: no per-node / per-tensor / runtime costs.
    const bare = JSON.parse(JSON.stringify(profile)) as { -readonly [K in keyof TargetProfile]: any };
    delete bare.runtime;
    for (const a of bare.accelerators) { delete a.nodeOverheadMs; delete a.tensorOverheadMs; delete a.nodeElementNs; }
    await writeFile(join(work, 'bare.json'), JSON.stringify(bare));
    await partition({ input: MODEL, out: join(work, 'bricks'), verify: false });
    // engine 'ort': the plan's cost model is ONNX Runtime's (calibrated per-call / per-node costs); the native pack
    // that compile's default adds for this decoder decodes 2–4× faster than that model predicts.
    await compile({ bricks: join(work, 'bricks'), target: host, out: join(work, 'bundle'), engine: 'ort' });
    await compile({ bricks: join(work, 'bricks'), target: join(work, 'bare.json'), out: join(work, 'bare-bundle'), engine: 'ort' });
    const plan = (await readBundle(join(work, 'bundle'))).plan;
    const barePlan = (await readBundle(join(work, 'bare-bundle'))).plan;
    // The reference request of a model that sees and hears is one chat turn with one image.
    expect(plan.workload).toMatchObject({ images: 1, audioClips: 0 });
    expect(plan.stages.filter((s) => s.repeat === 'per-token').map((s) => s.phase).sort()).toEqual(['decode', 'embed']);

    const measured = await bench({ dir: join(work, 'bundle'), runs: 3, threads: 1, promptTokens: plan.workload.promptTokens, newTokens: plan.workload.outputTokens, streamImages: 0 });
    const check = planVsMeasured(plan, measured, 0.25, 'best');
    expect(check.rows.map((r) => r.what)).toEqual(['encode ms', 'prefill tok/s', 'decode tok/s', 'latency ms']);
    const report = check.rows.map((r) => `${r.what}: predicted ${r.predicted.toFixed(2)}, measured ${r.measured.toFixed(2)}, ratio ${r.ratio.toFixed(2)}`).join('\n');
    if (process.env.PLAN_REPORT) console.log(report, "\nwithout fixed costs:", planVsMeasured(barePlan, measured, 0.25, "best").rows.map((r) => `${r.what} ${r.predicted.toFixed(2)} (ratio ${r.ratio.toFixed(2)})`).join(", ")); // for a report only
    for (const r of check.rows) {
      expect(r.ratio, report).toBeGreaterThan(1 / FACTOR[r.what]!);
      expect(r.ratio, report).toBeLessThan(FACTOR[r.what]!);
    }
    // Without the fixed costs the same measurement is further off (log distance from a ratio of 1).
    const bareRows = planVsMeasured(barePlan, measured, 0.25, 'best').rows;
    for (const what of ['latency ms', 'encode ms'] as const) {
      const withCosts = check.rows.find((r) => r.what === what)!, without = bareRows.find((r) => r.what === what)!;
      expect(Math.abs(Math.log(withCosts.ratio)), `${report}\nwithout fixed costs: ${what} predicted ${without.predicted.toFixed(2)}`).toBeLessThan(Math.abs(Math.log(without.ratio)));
    }
    expect(JSON.parse(await readFile(host, 'utf8')).runtime.tokenLoopMs.source).toBe('measured');
  }, 120_000);
});
