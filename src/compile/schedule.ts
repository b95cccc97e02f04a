/**
 * Requests as task graphs, and the discrete-event scheduler that runs them on a board's accelerators.
 *
 * A chat request is: each image through the vision encoder (and projector), each clip through the audio
 * encoder, the prompt through the embedding — these run concurrently where their accelerators differ —
 * then one decoder prefill over the prompt with the encoder rows merged in, then per output token an
 * embedding lookup and a decode step at the growing context. The monolithic baseline runs the same work
 * on one accelerator strictly in order and copies every tensor that crosses a brick boundary.
 *
 * Each accelerator runs one task at a time, first ready first served; a task is ready when all its
 * dependencies are done and its release time has come. Concurrent tasks do not slow each other down
 * (shared memory bandwidth is not modelled): a stated assumption of every estimate built on this.
 */
import type { BrickInfo, BrickSetInfo } from './analyze.js';
import { tensorBytesAt } from './analyze.js';
import type { BrickCostModel, Workload } from './cost.js';

export type Phase = 'encode' | 'embed' | 'prefill' | 'decode' | 'copy' | 'load' | 'release';

export interface Task {
  readonly id: string;
  readonly brick: string;
  readonly phase: Phase;
  readonly accelerator: string;
  readonly ms: number;
  readonly mJ: number | null;
  readonly deps: readonly string[];
  readonly request: number;
  /** Earliest start (ms), e.g. a camera frame's arrival. */
  readonly release?: number;
}

export interface Span { readonly task: Task; readonly start: number; readonly end: number }

export interface RequestGraphOptions {
  readonly request: number;
  readonly release?: number;
  /** Monolithic baseline: one chain, no overlap, a copy task at every brick boundary. */
  readonly baseline?: { readonly accelerator: string; readonly copyGBps: number; readonly copyPowerW: number | null };
  readonly prefix?: string;
}

/** Encoder rows merged into the decoder's prompt for one request. */
export function encoderTokens(set: BrickSetInfo, w: Workload): number {
  let n = 0;
  for (const b of set.bricks) {
    if (b.entry.kind === 'audio' && w.audioClips) n += (b.tokens ?? 0) * w.audioClips;
    if (b.entry.kind === 'vision' && w.images) n += (b.tokens ?? 0) * w.images;
  }
  return n;
}

/** The task graph of one request under a placement (`models` by brick name). */
export function requestGraph(set: BrickSetInfo, models: ReadonlyMap<string, BrickCostModel>, w: Workload, o: RequestGraphOptions): Task[] {
  const tasks: Task[] = [];
  const p = `${o.prefix ?? ''}r${o.request}.`;
  const byKind = (k: string) => set.bricks.filter((b) => b.entry.kind === k);
  let last: string | undefined;
  const add = (b: BrickInfo, phase: Phase, id: string, deps: string[], tokens: number, context: number) => {
    const m = models.get(b.entry.name)!;
    const c = m.call(tokens, context);
    const chain = o.baseline && last && !deps.includes(last) ? [...deps, last] : deps;
    tasks.push({ id: p + id, brick: b.entry.name, phase, accelerator: o.baseline?.accelerator ?? m.accelerator, ms: c.ms, mJ: c.mJ, deps: chain, request: o.request, release: o.release });
    last = p + id;
    return p + id;
  };
  const copy = (from: BrickInfo, id: string, dep: string, tokens: number): string => {
    if (!o.baseline) return dep;
    const bytes = from.entry.outputs.reduce((n, t) => n + (/^present\./.test(t.name) ? 0 : tensorBytesAt(t, { sequence_length: tokens, total_sequence_length: tokens })), 0);
    const ms = (2 * bytes) / (o.baseline.copyGBps * 1e9) * 1e3;
    tasks.push({ id: p + id, brick: from.entry.name, phase: 'copy', accelerator: o.baseline.accelerator, ms, mJ: o.baseline.copyPowerW === null ? null : o.baseline.copyPowerW * ms, deps: [dep], request: o.request, release: o.release });
    last = p + id;
    return p + id;
  };
  const ready: string[] = [];
  const projector = byKind('projector')[0];
  for (let i = 0; i < w.images; i++)
    for (const v of byKind('vision')) {
      let id = add(v, 'encode', `${v.entry.name}#${i}`, [], 1, 1);
      if (projector) id = add(projector, 'encode', `${projector.entry.name}#${i}`, [copy(v, `copy:${v.entry.name}#${i}`, id, 1)], 1, 1);
      ready.push(copy(projector ?? v, `copy:${(projector ?? v).entry.name}#${i}`, id, 1));
    }
  for (let i = 0; i < w.audioClips; i++)
    for (const a of byKind('audio')) ready.push(copy(a, `copy:${a.entry.name}#${i}`, add(a, 'encode', `${a.entry.name}#${i}`, [], 1, 1), 1));
  const embed = byKind('embed')[0];
  const decoder = byKind('decoder')[0];
  if (!decoder) return tasks;
  if (embed) ready.push(copy(embed, 'copy:embed', add(embed, 'embed', `${embed.entry.name}:prompt`, [], w.promptTokens, w.promptTokens), w.promptTokens));
  const prompt = w.promptTokens + encoderTokens(set, w);
  let prev = add(decoder, 'prefill', `${decoder.entry.name}:prefill`, ready, prompt, prompt);
  for (let t = 1; t < w.outputTokens; t++) {
    const e = embed ? add(embed, 'embed', `${embed.entry.name}#${t}`, [prev], 1, 1) : prev;
    prev = add(decoder, 'decode', `${decoder.entry.name}#${t}`, [e], 1, prompt + t);
  }
  return tasks;
}

export interface DesHooks {
  /** Called when a task is about to start; return false to drop it (and everything that depends on it). */
  beforeStart?(task: Task, now: number): boolean;
  onDone?(task: Task, now: number): void;
}

export interface DesResult { readonly spans: readonly Span[]; readonly dropped: readonly Task[]; readonly makespan: number }

/** Runs tasks on their accelerators: one task at a time per accelerator, first ready first served. */
export function runDes(tasks: readonly Task[], hooks: DesHooks = {}): DesResult {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const dependents = new Map<string, Task[]>();
  const missing = new Map<string, number>();
  for (const t of tasks) {
    missing.set(t.id, t.deps.filter((d) => byId.has(d)).length);
    for (const d of t.deps) if (byId.has(d)) (dependents.get(d) ?? dependents.set(d, []).get(d)!).push(t);
  }
  const queues = new Map<string, { task: Task; at: number; seq: number }[]>();
  const running = new Map<string, { task: Task; end: number }>();
  const spans: Span[] = [];
  const dropped: Task[] = [];
  let seq = 0;
  const enqueue = (t: Task, at: number) => {
    const q = queues.get(t.accelerator) ?? queues.set(t.accelerator, []).get(t.accelerator)!;
    q.push({ task: t, at: Math.max(at, t.release ?? 0), seq: seq++ });
  };
  const release = (t: Task, now: number, drop: boolean) => {
    for (const d of dependents.get(t.id) ?? []) {
      const left = missing.get(d.id)! - 1;
      missing.set(d.id, left);
      if (drop) { if (!dropped.includes(d)) { dropped.push(d); missing.set(d.id, -1); release(d, now, true); } }
      else if (left === 0) enqueue(d, now);
    }
  };
  for (const t of tasks) if (missing.get(t.id) === 0) enqueue(t, 0);
  let now = 0;
  for (;;) {
    for (const [acc, q] of queues) {
      while (!running.has(acc)) {
        let best = -1;
        q.forEach((x, i) => { if (x.at <= now && (best < 0 || x.at < q[best].at || (x.at === q[best].at && x.seq < q[best].seq))) best = i; });
        if (best < 0) break;
        const { task } = q.splice(best, 1)[0];
        if (missing.get(task.id) === -1) continue;
        if (hooks.beforeStart && !hooks.beforeStart(task, now)) { dropped.push(task); missing.set(task.id, -1); release(task, now, true); continue; }
        running.set(acc, { task, end: now + task.ms });
        spans.push({ task, start: now, end: now + task.ms });
      }
    }
    let next = Infinity;
    for (const r of running.values()) next = Math.min(next, r.end);
    for (const [acc, q] of queues) if (!running.has(acc)) for (const x of q) if (x.at > now) next = Math.min(next, x.at);
    if (next === Infinity) break;
    now = next;
    for (const [acc, r] of [...running]) if (r.end <= now) {
      running.delete(acc);
      hooks.onDone?.(r.task, now);
      release(r.task, now, false);
    }
  }
  return { spans, dropped, makespan: spans.reduce((m, s) => Math.max(m, s.end), 0) };
}
