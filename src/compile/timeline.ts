/**
 * Pictures of a simulation: an SVG Gantt chart (one lane per accelerator, the plan above the monolithic
 * baseline on the same time scale) and a Chrome / Perfetto trace (JSON trace event format: `ph: 'X'`
 * complete events in microseconds, one process per schedule, one thread per accelerator).
 */
import type { Span } from './schedule.js';
import type { SimResult } from './simulate.js';

const COLORS: Record<string, string> = { encode: '#4e79a7', embed: '#9c9c9c', prefill: '#f28e2b', decode: '#59a14f', copy: '#e15759', load: '#b07aa1', release: '#76b7b2' };
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (x: number | null, digits = 2) => (x === null ? 'n/a' : x >= 100 ? x.toFixed(0) : x.toPrecision(digits + 1));

/** Spans drawn at most: beyond, the chart zooms into the start (the whole timeline is in --trace). */
export const MAX_DRAWN_SPANS = 300;

/** Axis ticks at round values (1, 2, 2.5 or 5 × 10^k) from 0 to at most `end`, about `n` of them. */
export function roundTicks(end: number, n = 5): number[] {
  if (!(end > 0)) return [0];
  const raw = end / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((st) => st >= raw)!;
  const ticks: number[] = [];
  for (let i = 0; i * step <= end * (1 + 1e-9); i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/**
 * The time window drawn: the whole timeline, or — when the plan has more than MAX_DRAWN_SPANS spans
 * (a camera stream of hundreds of frames would be sub-pixel slivers) — its first three requests (at most
 * MAX_DRAWN_SPANS spans), where the overlap of one frame's encoder with the last one's decoder shows.
 */
export function svgWindow(sim: SimResult): { end: number; total: number; zoomed: boolean } {
  const total = Math.max(1e-9, ...sim.timeline.map((s) => s.end), ...sim.baselineTimeline.map((s) => s.end));
  if (sim.timeline.length <= MAX_DRAWN_SPANS) return { end: total, total, zoomed: false };
  // The first three requests show how one request's encoder overlaps the previous one's decoder.
  const firstThree = sim.timeline.filter((s) => s.task.request <= 2);
  const starts = sim.timeline.map((s) => s.start).sort((a, b) => a - b);
  const end = firstThree.length && firstThree.length <= MAX_DRAWN_SPANS ? Math.max(...firstThree.map((s) => s.end)) : starts[MAX_DRAWN_SPANS];
  return { end: Math.max(1e-9, end), total, zoomed: true };
}

export function ganttSvg(sim: SimResult): string {
  const W = 1100, left = 250, right = 20, laneH = 26, gap = 6;
  const lanes = sim.accelerators;
  const win = svgWindow(sim);
  const end = win.end;
  const x = (t: number) => left + (Math.min(t, end) / end) * (W - left - right);
  const panelH = 34 + lanes.length * (laneH + gap);
  const top = 96 + (win.zoomed ? 20 : 0);
  const H = top + 2 * panelH + 70;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="16" y="26" font-size="17" font-weight="bold">${esc(`nanomind plan on ${sim.target} — scenario ${sim.scenario}`)}</text>`);
  out.push(`<text x="16" y="48" fill="#b00020">${esc('MODEL-BASED ESTIMATE: a simulation from the target profile and the cost model, not a measurement')}</text>`);
  out.push(`<text x="16" y="70">${esc(`plan: ${fmt(sim.latencyMs)} ms/request, ${fmt(sim.energyMj)} mJ, ${fmt(sim.peakMemoryMb)} MB   |   baseline (${sim.baseline.accelerator} only): ${fmt(sim.baseline.latencyMs)} ms, ${fmt(sim.baseline.energyMj)} mJ, ${fmt(sim.baseline.peakMemoryMb)} MB   |   speed-up ×${fmt(sim.ratios.latency)}`)}</text>`);
  if (win.zoomed)
    out.push(`<text x="16" y="90" class="zoom">${esc(`showing the first ${fmt(end, 3)} ms of ${fmt(win.total, 3)} ms (${sim.timeline.filter((sp) => sp.start < end).length} of ${sim.timeline.length} plan spans); the whole timeline is in the --trace file`)}</text>`);
  const panel = (name: string, title: string, spans: readonly Span[], y0: number) => {
    out.push(`<g class="panel" data-panel="${name}">`);
    out.push(`<text x="16" y="${y0 + 16}" font-weight="bold">${esc(title)}</text>`);
    lanes.forEach((l, i) => {
      const y = y0 + 26 + i * (laneH + gap);
      out.push(`<g class="lane" data-panel="${name}" data-lane="${esc(l.id)}">`);
      out.push(`<rect x="${left}" y="${y}" width="${W - left - right}" height="${laneH}" fill="#f3f3f3"/>`);
      out.push(`<text x="16" y="${y + 17}">${esc(`${l.id} — ${l.title}`.slice(0, 36))}</text>`);
      const mine = spans.filter((sp) => sp.task.accelerator === l.id && sp.start < end).sort((a, b) => a.start - b.start);
      for (const b of mergeSlivers(mine, x)) {
        const w = Math.max(0.6, x(b.end) - x(b.start));
        const what = b.count > 1 ? `${b.count} ${b.phase} spans` : `${b.first.task.id} (${b.phase})`;
        out.push(`<rect x="${x(b.start).toFixed(2)}" y="${y + 3}" width="${w.toFixed(2)}" height="${laneH - 6}" fill="${COLORS[b.phase] ?? '#444'}" stroke="#ffffff" stroke-width="0.3"><title>${esc(`${what} ${b.start.toFixed(3)}–${b.end.toFixed(3)} ms`)}</title></rect>`);
      }
      out.push('</g>');
    });
    out.push('</g>');
  };
  panel('plan', 'nanomind plan: bricks on their accelerators, encoders overlapping the decoder', sim.timeline, top);
  panel('baseline', `monolithic baseline: everything on ${sim.baseline.accelerator}, in order, with copies`, sim.baselineTimeline, top + panelH);
  const axisY = top + 2 * panelH + 8;
  out.push(`<line x1="${left}" y1="${axisY}" x2="${W - right}" y2="${axisY}" stroke="#333"/>`);
  for (const t of roundTicks(end))
    out.push(`<line x1="${x(t).toFixed(2)}" y1="${axisY}" x2="${x(t).toFixed(2)}" y2="${axisY + 5}" stroke="#333"/><text class="tick" x="${x(t).toFixed(2)}" y="${axisY + 18}" text-anchor="${t === 0 ? 'start' : 'middle'}">${esc(`${t} ms`)}</text>`);
  let lx = left;
  for (const [phase, color] of Object.entries(COLORS).slice(0, 5)) {
    out.push(`<rect x="${lx}" y="${axisY + 32}" width="12" height="12" fill="${color}"/><text x="${lx + 16}" y="${axisY + 42}">${phase}</text>`);
    lx += 90;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

interface Block { start: number; end: number; phase: string; count: number; first: Span }

/** Consecutive spans of one phase narrower than 2 px with under 1 px between them become one block. */
function mergeSlivers(spans: readonly Span[], x: (t: number) => number): Block[] {
  const out: Block[] = [];
  for (const s of spans) {
    const last = out[out.length - 1];
    const narrow = x(s.end) - x(s.start) < 2;
    if (last && narrow && last.phase === s.task.phase && x(s.start) - x(last.end) < 1 && (last.count > 1 || x(last.end) - x(last.start) < 2)) {
      last.end = Math.max(last.end, s.end);
      last.count++;
    } else out.push({ start: s.start, end: s.end, phase: s.task.phase, count: 1, first: s });
  }
  return out;
}

export interface TraceEvent { name: string; cat?: string; ph: string; ts?: number; dur?: number; pid: number; tid?: number; args?: Record<string, unknown> }

export function chromeTrace(sim: SimResult): { traceEvents: TraceEvent[]; displayTimeUnit: 'ms'; otherData: Record<string, unknown> } {
  const events: TraceEvent[] = [];
  const tid = (acc: string) => sim.accelerators.findIndex((a) => a.id === acc) + 1;
  [['nanomind plan (estimate)', sim.timeline], [`monolithic baseline on ${sim.baseline.accelerator} (estimate)`, sim.baselineTimeline]].forEach(([name, spans], k) => {
    const pid = k + 1;
    events.push({ name: 'process_name', ph: 'M', pid, args: { name } });
    for (const a of sim.accelerators) events.push({ name: 'thread_name', ph: 'M', pid, tid: tid(a.id), args: { name: `${a.id} — ${a.title}` } });
    for (const s of spans as readonly Span[])
      events.push({ name: `${s.task.brick}:${s.task.phase}`, cat: s.task.phase, ph: 'X', ts: s.start * 1000, dur: (s.end - s.start) * 1000, pid, tid: tid(s.task.accelerator), args: { id: s.task.id, request: s.task.request, mJ: s.task.mJ } });
  });
  return { traceEvents: events, displayTimeUnit: 'ms', otherData: { estimate: true, target: sim.target, scenario: sim.scenario, assumptions: sim.assumptions } };
}
