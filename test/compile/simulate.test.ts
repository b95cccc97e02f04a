import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { compileVerb } from '../../src/cli/compile.js';
import { planVerb } from '../../src/cli/plan.js';
import { place } from '../../src/compile/placement.js';
import { runDes, type Task } from '../../src/compile/schedule.js';
import { parseScenario, simulate } from '../../src/compile/simulate.js';
import { loadTarget } from '../../src/compile/targets.js';
import { chromeTrace, ganttSvg } from '../../src/compile/timeline.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { onevisionLike } from './synthetic.js';

let work: string;
beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'nanomind-sim-')); });
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

const task = (id: string, accelerator: string, ms: number, deps: string[] = [], release?: number): Task =>
  ({ id, brick: id, phase: 'encode', accelerator, ms, mJ: ms, deps, request: 0, release });

describe('discrete-event scheduler', () => {
  it('overlaps tasks on different accelerators, serializes tasks on one, honours dependencies and release times', () => {
    const r = runDes([task('a', 'npu', 10), task('b', 'cpu', 4), task('c', 'cpu', 3), task('d', 'cpu', 5, ['a', 'b']), task('e', 'npu', 1, [], 30)]);
    const at = Object.fromEntries(r.spans.map((s) => [s.task.id, [s.start, s.end]]));
    expect(at).toEqual({ a: [0, 10], b: [0, 4], c: [4, 7], d: [10, 15], e: [30, 31] });
    expect(r.makespan).toBe(31);
  });
  it('drops a task and everything after it when the hook says so', () => {
    const r = runDes([task('a', 'npu', 1), task('b', 'cpu', 1, ['a']), task('c', 'cpu', 1)], { beforeStart: (t) => t.id !== 'a' });
    expect(r.dropped.map((t) => t.id).sort()).toEqual(['a', 'b']);
    expect(r.spans.map((s) => s.task.id)).toEqual(['c']);
  });
});

describe('simulation of a LLaVA-OneVision-0.5B-sized plan on rk3588 (model-based estimate)', () => {
  const W = { images: 1, audioClips: 0, promptTokens: 32, outputTokens: 64, maxContext: 4096 };
  it('beats the monolithic CPU baseline and pipelines camera frames', async () => {
    const t = await loadTarget('rk3588');
    const set = onevisionLike('w8a8');
    const placed = place(set, t, { objective: 'latency', workload: W });
    const placement = placed.bricks.map((b) => ({ brick: b.brick, accelerator: b.accelerator, format: b.format }));
    const chat = simulate(set, t, placement, W, { scenario: { kind: 'chat' } });
    expect(chat.estimate).toBe(true);
    expect(chat.ratios.latency).toBeGreaterThan(1);
    expect(chat.ratios.energy!).toBeGreaterThan(1);
    expect(chat.baseline.accelerator).toBe('cpu-big');
    for (const s of ['unconstrained', 'proportional', 'critical'] as const) expect(chat.batteryHours[s]!).toBeGreaterThan(0);
    expect(chat.batteryHours.critical!).toBeGreaterThanOrEqual(chat.batteryHours.unconstrained!);
    // Latency of one chat request equals the sum along its critical path (no other work competes).
    const byPhase = (p: string) => chat.timeline.filter((s) => s.task.phase === p);
    expect(byPhase('prefill')[0].start).toBeCloseTo(Math.max(...byPhase('encode').map((s) => s.end), byPhase('embed')[0].end), 9);
    const cam = simulate(set, t, placement, W, { scenario: parseScenario('camera:0.5') });
    expect(cam.requests + cam.dropped).toBe(5);
    // The latency placement puts the vision encoder (GPU) and the decoder (NPU) on different units, so
    // frame k+1's encoder overlaps frame k's decode. Both facts are asserted: no guard can skip this.
    const enc1 = cam.timeline.find((s) => s.task.request === 1 && s.task.phase === 'encode')!;
    const dec0 = cam.timeline.filter((s) => s.task.request === 0 && s.task.phase === 'decode').at(-1)!;
    expect(enc1).toBeDefined();
    expect(enc1.task.accelerator).not.toBe(dec0.task.accelerator);
    expect(enc1.start).toBeLessThan(dec0.end);
    const svg = ganttSvg(chat);
    const png = await sharp(Buffer.from(svg)).png().toBuffer(); // librsvg parses the XML: an invalid SVG throws
    expect(png.length).toBeGreaterThan(1000);
    for (const panel of ['plan', 'baseline'])
      expect([...svg.matchAll(new RegExp(`<g class="lane" data-panel="${panel}" data-lane="([^"]+)"`, 'g'))].map((m) => m[1])).toEqual(t.accelerators.map((a) => a.id));
    expect(svg).toContain('MODEL-BASED ESTIMATE');
    const trace = chromeTrace(chat);
    expect(trace.traceEvents.filter((e) => e.ph === 'X').length).toBe(chat.timeline.length + chat.baselineTimeline.length);
    expect(trace.otherData.estimate).toBe(true);
  });
  it('rejects scenarios the bundle cannot serve', async () => {
    expect(() => simulate(onevisionLike('w8a8'), { accelerators: [] } as never, [], W, { scenario: { kind: 'voice' } })).toThrow(expect.objectContaining({ code: 'E_SIM_SCENARIO' }));
    expect(() => parseScenario('camera:fast')).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });
});

describe('CLI: nanomind compile and nanomind plan', () => {
  const run = async (...argv: string[]) => {
    const program = new Command('nanomind').exitOverride();
    compileVerb(program); planVerb(program);
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => { out.push(String(s)); return true; });
    try { await program.parseAsync(argv, { from: 'user' }); } finally { spy.mockRestore(); }
    return out.join('');
  };
  it('compiles the fixture, explains, and simulates with --json, --svg and --trace', async () => {
    const bricks = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bricks });
    const bundle = join(work, 'bundle');
    const c = JSON.parse(await run('compile', bricks, '--target', 'rk3588', '-o', bundle, '--place', 'vision=npu', '--explain', '--json', '--no-rknn'));
    expect(c.estimate).toBe(true);
    expect(c.placement.find((p: any) => p.brick === 'vision').accelerator).toBe('npu');
    expect(c.placement.find((p: any) => p.brick === 'embed').alternatives.find((a: any) => a.accelerator === 'npu').reason).toMatch(/static shapes/);
    const text = await run('compile', bricks, '--target', 'rk3588', '-o', bundle, '--explain', '--no-rknn');
    expect(text).toMatch(/why not/);
    const svg = join(work, 'plan.svg'), trace = join(work, 'trace.json');
    const s = JSON.parse(await run('plan', bundle, '--simulate', '--scenario', 'camera:2', '--battery', '3000', '--svg', svg, '--trace', trace, '--json'));
    for (const k of ['latencyMs', 'energyMj', 'peakMemoryMb']) { expect(typeof s[k]).toBe('number'); expect(typeof s.baseline[k]).toBe('number'); }
    expect(s.estimate).toBe(true);
    expect(Object.keys(s.batteryHours)).toEqual(['unconstrained', 'proportional', 'critical']);
    expect(s.ratios.latency).toBeGreaterThan(0);
    expect((await readFile(svg, 'utf8')).startsWith('<svg')).toBe(true);
    expect(JSON.parse(await readFile(trace, 'utf8')).traceEvents.length).toBeGreaterThan(10);
    expect(await run('plan', bundle)).toMatch(/power policy: unconstrained when battery > 50%/);
    await expect(run('compile', bricks, '--target', 'rk3588', '-o', bundle, '--place', 'vision')).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});
