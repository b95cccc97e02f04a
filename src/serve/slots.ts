/**
 * The one owner of generation: a bounded FIFO queue in front of one decoder. Each request is a task
 * with its own AbortSignal; a task whose client went away is dropped from the queue, or stopped after
 * the token being computed when it is running. A full queue refuses at once (E_SERVE_QUEUE_FULL → 429).
 *
 * KV prefix reuse: a few ChatSessions (slots) keep their caches between requests; each task takes the
 * slot whose cached tokens share the longest prefix with its prompt (a shared system prompt, the
 * previous turn of the same conversation), else the least recently used one. Only one runs at a time.
 */
import { fail, isNanomindError } from '../errors.js';
import { ChatSession } from '../run/generation/chat-session.js';
import type { RuntimeModel } from '../run/model.js';
import { samplingFor } from '../run/run.js';
import { prepareConversation } from './conversation.js';
import type { ServePower } from './power.js';
import type { ServeRequest, ServeResult } from './request.js';

export interface SlotsOptions {
  /** Requests that may wait while one generates; 0: none waits. */
  readonly maxQueue: number;
  /** Tokens each slot's KV cache holds (default: the model's context, at most 4096). */
  readonly maxContext?: number;
  /** Conversations whose KV caches are kept (default 4). */
  readonly cacheSlots?: number;
  /** The battery-aware policy, applied as each request leaves the queue (./power.ts). */
  readonly power?: ServePower;
}

export interface Task {
  readonly request: ServeRequest;
  readonly signal: AbortSignal;
  /** Streamed answer text, as it becomes printable. */
  readonly onText?: (delta: string) => void;
  /** Called once the task leaves the queue and generation starts. */
  readonly onStart?: () => void;
}

interface Waiting { readonly task: Task; readonly queuedAt: number; resolve(r: ServeResult): void; reject(e: unknown): void }

export class Slots {
  private readonly queue: Waiting[] = [];
  private readonly sessions: { session: ChatSession; used: number }[] = [];
  private running: Waiting | undefined;
  private closed = false;
  private idle: (() => void)[] = [];
  /** Mean wall ms of recent requests, for Retry-After. */
  private meanMs = 1000;

  constructor(readonly model: RuntimeModel, readonly options: SlotsOptions) {
    for (let i = 0; i < Math.max(1, options.cacheSlots ?? 4); i++)
      this.sessions.push({ session: new ChatSession(model.set, { maxContext: options.maxContext }), used: 0 });
  }

  get queued(): number { return this.queue.length; }
  get busy(): boolean { return this.running !== undefined; }
  get maxContext(): number { return this.sessions[0]!.session.maxContext; }
  /** Seconds a refused client should wait: the queue ahead times the recent mean request time. */
  get retryAfterS(): number { return Math.max(1, Math.ceil(((this.queue.length + 1) * this.meanMs) / 1000)); }

  /** Queues a task; rejects at once when the queue is full or the server is stopping. */
  submit(task: Task): Promise<ServeResult> {
    if (this.closed) return Promise.reject(fail('E_SERVE_STOPPING', 'the server is shutting down'));
    if (this.running && this.queue.length >= this.options.maxQueue)
      return Promise.reject(fail('E_SERVE_QUEUE_FULL', `${this.queue.length} request(s) already wait for the decoder (--max-queue ${this.options.maxQueue})`,
        { hint: `retry after ${this.retryAfterS} s` }));
    return new Promise<ServeResult>((resolve, reject) => {
      const w: Waiting = { task, queuedAt: performance.now(), resolve, reject };
      this.queue.push(w);
      task.signal.addEventListener('abort', () => {
        const i = this.queue.indexOf(w);
        if (i >= 0) { this.queue.splice(i, 1); reject(fail('E_SERVE_CANCELLED', 'the client went away while the request was queued')); }
      }, { once: true });
      this.pump();
    });
  }

  /** Refuses new tasks, cancels the queued ones, and waits for the running one (aborted after `graceMs`). */
  async close(graceMs: number, abortRunning: () => void): Promise<void> {
    this.closed = true;
    for (const w of this.queue.splice(0)) w.reject(fail('E_SERVE_STOPPING', 'the server is shutting down'));
    if (!this.running) return;
    const timer = setTimeout(abortRunning, graceMs);
    await new Promise<void>((r) => this.idle.push(r));
    clearTimeout(timer);
  }

  private pump(): void {
    if (this.running || !this.queue.length) return;
    const w = this.queue.shift()!;
    this.running = w;
    this.run(w).then(w.resolve, w.reject).finally(() => {
      this.running = undefined;
      if (!this.queue.length) for (const r of this.idle.splice(0)) r();
      this.pump();
    });
  }

  private async run(w: Waiting): Promise<ServeResult> {
    const t0 = performance.now();
    const queueMs = t0 - w.queuedAt;
    const { task } = w;
    task.onStart?.();
    const m = this.model;
    const req = task.request;
    await this.options.power?.beforeRequest();
    const p = await prepareConversation(m, req.messages);
    await this.options.power?.afterEncode();
    if (task.signal.aborted) throw fail('E_SERVE_CANCELLED', 'the client went away');
    const slot = this.pick(p.inputIds);
    slot.used = performance.now();
    const max = slot.session.maxContext;
    if (req.maxTokens !== undefined && req.maxTokens >= max)
      throw fail('E_SERVE_TOKENS', `max_tokens ${req.maxTokens} does not fit the ${max}-token context`, { hint: `ask for fewer than ${max - p.inputIds.length} tokens` });
    const r = await slot.session.generate({ inputIds: p.inputIds, features: p.features, mropePositions: p.mropePositions }, {
      maxNewTokens: req.maxTokens ?? max, sampling: samplingFor(m, req.sampling), stopStrings: req.stop,
      stopTokenIds: req.ignoreEos ? [] : undefined,
      decode: (ids) => m.tokenizer!.decode(ids, { skipSpecialTokens: true }),
      onToken: (e) => { if (e.text) task.onText?.(e.text); },
      signal: task.signal,
    }).catch((e) => {
      if (isNanomindError(e) && e.code === 'E_CONTEXT_OVERFLOW') slot.session.reset();
      throw e;
    });
    const end = performance.now();
    this.meanMs = 0.8 * this.meanMs + 0.2 * (end - t0);
    const g = r.stats;
    return {
      text: r.text ?? '', stopReason: r.stopReason,
      stats: {
        promptTokens: g.promptTokens, cachedTokens: g.reusedTokens, completionTokens: g.newTokens, queueMs, encodeMs: p.encodeMs,
        ttftMs: g.ttftMs + p.encodeMs, prefillMs: g.prefillMs, decodeMs: g.decodeMs, prefillTokPerS: g.prefillTokPerS,
        decodeTokPerS: g.decodeTokPerS, totalMs: end - w.queuedAt,
      },
    };
  }

  /** The slot holding the longest prefix of `ids`; ties (and no match) go to the least recently used. */
  private pick(ids: readonly number[]): { session: ChatSession; used: number } {
    let best = this.sessions[0]!, bestLen = -1;
    for (const s of this.sessions) {
      const t = s.session.tokens;
      let n = 0;
      while (n < t.length && n < ids.length && t[n] === ids[n]) n++;
      if (n > bestLen || (n === bestLen && s.used < best.used)) { best = s; bestLen = n; }
    }
    return best;
  }
}
