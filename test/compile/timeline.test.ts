/**
 * The plan SVG for long timelines: a camera stream of hundreds of frames is drawn zoomed into its start
 * (at most MAX_DRAWN_SPANS plan spans, said on the chart), slivers of one phase merged, and axis ticks on
 * round values. Oracles: the simulation's own span list (counted here) and librsvg (sharp) parsing the SVG.
 */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { place } from '../../src/compile/placement.js';
import { parseScenario, simulate } from '../../src/compile/simulate.js';
import { loadTarget } from '../../src/compile/targets.js';
import { ganttSvg, MAX_DRAWN_SPANS, roundTicks } from '../../src/compile/timeline.js';
import { onevisionLike } from './synthetic.js';

const W = { images: 1, audioClips: 0, promptTokens: 32, outputTokens: 64, maxContext: 4096 };
const isRound = (step: number) => { const m = step / 10 ** Math.floor(Math.log10(step)); return [1, 2, 2.5, 5].some((r) => Math.abs(m - r) < 1e-9); };

describe('plan SVG', () => {
  it('ticks fall on round values from 0, at most the end', () => {
    for (const end of [9.594, 0.0731, 1234, 60_000, 7]) {
      const t = roundTicks(end);
      expect(t[0]).toBe(0);
      expect(t.at(-1)!).toBeLessThanOrEqual(end);
      expect(t.length).toBeGreaterThanOrEqual(3);
      expect(isRound(t[1] - t[0])).toBe(true);
    }
    expect(roundTicks(9.594)).toEqual([0, 2, 4, 6, 8]);
  });

  it('a 200-frame camera stream is drawn zoomed into its start, readable, and says so', async () => {
    const t = await loadTarget('rk3588');
    const set = onevisionLike('w8a8');
    const placement = place(set, t, { objective: 'latency', workload: W }).bricks.map((b) => ({ brick: b.brick, accelerator: b.accelerator, format: b.format }));
    const cam = simulate(set, t, placement, W, { scenario: parseScenario('camera:20') });
    expect(cam.timeline.length).toBeGreaterThan(3 * MAX_DRAWN_SPANS);
    const svg = ganttSvg(cam);
    expect(svg).toMatch(/<text[^>]*class="zoom"[^>]*>showing the first/);
    const plan = svg.slice(svg.indexOf('data-panel="plan"'), svg.indexOf('data-panel="baseline"'));
    const rects = [...plan.matchAll(/<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)" height="20"[^>]*><title>[^<]*\((\w+)\)/g)].map((m) => ({ w: Number(m[1]), phase: m[2] }));
    expect(rects.length).toBeGreaterThan(10);
    expect(rects.length).toBeLessThanOrEqual(MAX_DRAWN_SPANS);
    // The big work is wide enough to see where one frame's encoder overlaps the last one's decoder
    // (drawn over the whole stream, each encode would be a few pixels).
    const encodes = rects.filter((r) => r.phase === 'encode');
    expect(encodes.length).toBeGreaterThanOrEqual(2);
    for (const e of encodes) expect(e.w).toBeGreaterThan(10);
    const ticks = [...svg.matchAll(/<text class="tick"[^>]*>([\d.]+) ms</g)].map((m) => Number(m[1]));
    expect(isRound(ticks[1] - ticks[0])).toBe(true);
    expect((await sharp(Buffer.from(svg)).png().toBuffer()).length).toBeGreaterThan(1000);
    // A short chat timeline is drawn whole.
    expect(ganttSvg(simulate(set, t, placement, W, { scenario: { kind: 'chat' } }))).not.toContain('class="zoom"');
  });
});
