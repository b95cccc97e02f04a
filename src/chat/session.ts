/**
 * The conversation behind `nanomind chat`, free of any UI: history, pending attachments, slash commands
 * and per-turn statistics. The ink app and the line-by-line mode (stdin not a TTY) both drive it through
 * `handle(line)`, and tests drive it directly.
 *
 * One `ChatSession` lives as long as the conversation, so each turn re-renders the whole history with the
 * chat template and the session reuses the KV cache of the prefix it already holds: only the new user
 * message (and whatever the template re-tokenized differently) is prefilled. Feature rows of earlier
 * images stay here, so every generate call can cover every placeholder of the conversation; the session
 * matches them against the cached rows and does not re-run the encoder for them.
 */
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { isNanomindError, fail, type NanomindError } from '../errors.js';
import { ChatSession, type GenerationStats, type StopReason } from '../run/generation/chat-session.js';
import type { SamplingOptions } from '../run/generation/sampling.js';
import type { ChatMessage, MediaKind } from '../run/inputs/chat-template.js';
import { prepareTurn, type RuntimeModel } from '../run/model.js';
import { brickBackends } from '../run/brick-set.js';
import { peakRssMb, samplingFor } from '../run/run.js';
import { availableParallelism } from 'node:os';
import { decoderThreadsFor, transitionLine, type PowerMonitor, type PowerReport } from '../run/power/policy.js';

export interface ConversationOptions {
  readonly system?: string;
  readonly maxNewTokens?: number;
  /** Undefined: the model's generation_config (greedy when it says nothing); temperature 0 is greedy. */
  readonly sampling?: SamplingOptions;
  readonly stopStrings?: readonly string[];
  /** Tokens the session's arena and KV cache hold (default: the model's context, at most 4096). */
  readonly maxContext?: number;
  /**
   * The battery-aware policy, sampled before each turn: proportional gives the decoder α of
   * `decoderThreads`; critical releases the encoder sessions once a turn's media are encoded (the
   * decoder and its KV cache stay).
   */
  readonly power?: PowerMonitor;
  /** Decoder threads at α = 1 (default: this machine's cores). */
  readonly decoderThreads?: number;
}

export type ChatCommand =
  | { readonly kind: 'message'; readonly text: string }
  | { readonly kind: 'attach'; readonly media: MediaKind; readonly path: string }
  | { readonly kind: 'reset' | 'stats' | 'exit' | 'help' | 'empty' }
  | { readonly kind: 'unknown'; readonly name: string };

export const COMMANDS: readonly (readonly [string, string])[] = [
  ['/image PATH', 'attach an image to the next message'],
  ['/audio PATH', 'attach a WAV file to the next message'],
  ['/reset', 'forget the conversation (and its KV cache)'],
  ['/stats', "the last turn's timings, reused tokens, per-brick ms and peak RSS"],
  ['/help', 'this list'],
  ['/exit', 'quit (also Ctrl-D; Ctrl-C stops an answer, or quits when idle)'],
];

/** A line of user input → what to do. Text not starting with '/' is a message; '//x' sends '/x'. */
export function parseInput(line: string): ChatCommand {
  const text = line.replace(/\r?\n$/, '');
  const trimmed = text.trim();
  if (!trimmed) return { kind: 'empty' };
  if (!trimmed.startsWith('/')) return { kind: 'message', text };
  if (trimmed.startsWith('//')) return { kind: 'message', text: trimmed.slice(1) };
  const m = /^\/(\S+)\s*(.*)$/s.exec(trimmed)!;
  const name = m[1]!.toLowerCase();
  const arg = unquote(m[2]!.trim());
  switch (name) {
    case 'image': case 'img': case 'audio':
      return arg ? { kind: 'attach', media: name === 'audio' ? 'audio' : 'image', path: arg } : { kind: 'unknown', name: `/${name} (needs a PATH)` };
    case 'reset': case 'clear': return { kind: 'reset' };
    case 'stats': return { kind: 'stats' };
    case 'exit': case 'quit': case 'q': return { kind: 'exit' };
    case 'help': case '?': return { kind: 'help' };
    default: return { kind: 'unknown', name: `/${name}` };
  }
}

const unquote = (s: string): string => (/^(['"]).*\1$/s.test(s) ? s.slice(1, -1) : s);

export interface TurnStats {
  /** The backend every brick runs on. */
  readonly backends: Readonly<Record<string, string>>;
  readonly ttftMs: number;
  readonly prefillTokPerS: number;
  readonly decodeTokPerS: number;
  readonly promptTokens: number;
  /** Prompt tokens whose KV came from the cache of earlier turns. */
  readonly reusedTokens: number;
  readonly prefillTokens: number;
  readonly newTokens: number;
  readonly encodeMs: number;
  readonly totalMs: number;
  /** Wall ms per brick in this turn, encoders included. */
  readonly bricks: Readonly<Record<string, number>>;
  readonly peakRssMb: number;
  readonly contextTokens: number;
  readonly maxContext: number;
  /** With a power policy: its state after this turn's sample, α, and every transition so far. */
  readonly power?: PowerReport;
}

export interface TurnResult {
  readonly text: string;
  readonly tokens: readonly number[];
  readonly stopReason: StopReason;
  readonly stats: TurnStats;
}

export interface ErrorInfo { readonly code: string; readonly message: string; readonly hint?: string }

export type Outcome =
  | { readonly kind: 'answer'; readonly result: TurnResult }
  | { readonly kind: 'info'; readonly text: string }
  | { readonly kind: 'error'; readonly error: ErrorInfo }
  | { readonly kind: 'exit' }
  | { readonly kind: 'none' };

export interface SendOptions {
  /** New answer text as it becomes printable. */
  readonly onText?: (delta: string) => void;
  readonly signal?: AbortSignal;
}

export class Conversation {
  private readonly session: ChatSession;
  private messages: ChatMessage[] = [];
  private encoded: Record<number, Float32Array> = {};
  /** Decoder threads the power policy set (undefined: as the model was opened). */
  private decoderThreads: number | undefined;
  private pending: { image: string[]; audio: string[] } = { image: [], audio: [] };
  private last: TurnStats | undefined;
  private lastIds: readonly number[] = [];
  private turns = 0;

  constructor(readonly model: RuntimeModel, readonly options: ConversationOptions = {}) {
    this.session = new ChatSession(model.set, { maxContext: options.maxContext });
  }

  get history(): readonly ChatMessage[] { return this.messages; }
  get attachments(): { readonly image: readonly string[]; readonly audio: readonly string[] } { return this.pending; }
  get lastStats(): TurnStats | undefined { return this.last; }
  /** Tokens the session holds (KV cache) and how many it can hold. */
  get context(): { readonly tokens: number; readonly max: number } { return { tokens: this.session.tokens.length, max: this.session.maxContext }; }
  get turnCount(): number { return this.turns; }
  /** The whole conversation's ids as the last turn fed them (history re-rendered + the new message). */
  get lastPromptIds(): readonly number[] { return this.lastIds; }

  /** Queues a file for the next message after checking the model can take it and the file exists. */
  async attach(media: MediaKind, path: string): Promise<void> {
    this.model.set.encoder(media === 'image' ? 'vision' : 'audio');
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile()) throw fail(media === 'image' ? 'E_IMAGE' : 'E_AUDIO', `${path}: no such file`, { file: path });
    this.pending[media].push(path);
  }

  reset(): void {
    this.session.reset();
    this.messages = [];
    this.encoded = {};
    this.pending = { image: [], audio: [] };
    this.last = undefined;
    this.lastIds = [];
  }

  /** One user message (with the pending attachments) → one streamed answer. */
  async send(text: string, o: SendOptions = {}): Promise<TurnResult> {
    const m = this.model;
    const power = this.options.power;
    if (power) {
      await power.sample();
      const want = decoderThreadsFor(power.policy, this.options.decoderThreads ?? availableParallelism(), this.decoderThreads);
      if (want !== undefined && want !== this.decoderThreads) await m.set.release(m.set.decoder.brick.name, { threads: (this.decoderThreads = want) });
    }
    const before = m.set.brickMs();
    const attached = this.pending;
    this.pending = { image: [], audio: [] };
    const p = await prepareTurn(m, {
      prompt: text, system: this.options.system,
      images: attached.image.map((file) => ({ file })), audio: attached.audio.map((file) => ({ file })),
    }, this.messages, this.encoded);
    // Critical: the cascade's encoders ran only because this turn needed them; their memory goes back now.
    if (power?.policy.state === 'critical') for (const e of m.set.encoders) for (const b of e.chain) await m.set.release(b.name);
    const r = await this.session.generate({ inputIds: p.inputIds, features: p.features, mropePositions: p.mropePositions }, {
      maxNewTokens: this.options.maxNewTokens, sampling: samplingFor(m, this.options.sampling), stopStrings: this.options.stopStrings,
      decode: (ids) => m.tokenizer!.decode(ids, { skipSpecialTokens: true }),
      onToken: (e) => { if (e.text) o.onText?.(e.text); },
      signal: o.signal,
    });
    // Kept verbatim (not trimmed) so the next turn's template renders the tokens the cache holds.
    const answer = r.text ?? '';
    this.messages.push(p.message, { role: 'assistant', content: answer });
    this.encoded = p.features;
    this.lastIds = p.inputIds;
    this.turns++;
    const after = m.set.brickMs();
    const bricks = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)] as const).filter(([, v]) => v > 0));
    this.last = { ...turnStats(r.stats, p.encodeMs, bricks, this.context, brickBackends(m.set)), ...(power ? { power: power.policy.report() } : {}) };
    return { text: answer.trim(), tokens: r.tokens, stopReason: r.stopReason, stats: this.last };
  }

  /**
   * Runs one line of input. Problems the user can fix (a missing file, a model without a vision
   * encoder, a full context) come back as an `error` outcome and the conversation goes on; anything
   * else is a bug and is thrown.
   */
  async handle(line: string, o: SendOptions = {}): Promise<Outcome> {
    const c = parseInput(line);
    try {
      switch (c.kind) {
        case 'empty': return { kind: 'none' };
        case 'exit': return { kind: 'exit' };
        case 'help': return { kind: 'info', text: helpText() };
        case 'unknown': return { kind: 'error', error: { code: 'E_USAGE', message: `unknown command ${c.name}`, hint: 'type /help for the commands' } };
        case 'reset': this.reset(); return { kind: 'info', text: 'conversation reset' };
        case 'stats': return { kind: 'info', text: this.last ? formatStats(this.last) : 'no turn yet' };
        case 'attach':
          await this.attach(c.media, c.path);
          return { kind: 'info', text: `${c.media} ${c.path} attached to the next message` };
        case 'message': return { kind: 'answer', result: await this.send(c.text, o) };
      }
    } catch (e) {
      if (!isNanomindError(e)) throw e;
      const error = errorInfo(e);
      return { kind: 'error', error: e.code === 'E_CONTEXT_OVERFLOW' ? { ...error, hint: 'type /reset to start a new conversation (or raise --context)' } : error };
    }
  }

  close(): Promise<void> { return this.model.close(); }
}

export function turnStats(g: GenerationStats, encodeMs: number, bricks: Record<string, number>, ctx: { tokens: number; max: number },
  backends: Record<string, string> = {}): TurnStats {
  return {
    ttftMs: g.ttftMs + encodeMs, prefillTokPerS: g.prefillTokPerS, decodeTokPerS: g.decodeTokPerS,
    promptTokens: g.promptTokens, reusedTokens: g.reusedTokens, prefillTokens: g.prefillTokens, newTokens: g.newTokens,
    encodeMs, totalMs: g.totalMs + encodeMs, bricks, backends, peakRssMb: peakRssMb(), contextTokens: ctx.tokens, maxContext: ctx.max,
  };
}

export const errorInfo = (e: NanomindError): ErrorInfo => ({ code: e.code, message: e.message, hint: e.detail.hint });

export function helpText(): string {
  const w = Math.max(...COMMANDS.map(([c]) => c.length));
  return COMMANDS.map(([c, d]) => `${c.padEnd(w)}  ${d}`).join('\n');
}

const fmt = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');

export function formatStats(s: TurnStats): string {
  const lines = [
    `TTFT ${fmt(s.ttftMs)} ms${s.encodeMs ? ` (encoders ${fmt(s.encodeMs)} ms)` : ''} · total ${fmt(s.totalMs)} ms`,
    `prompt ${s.promptTokens} tokens: ${s.reusedTokens} reused from the KV cache, ${s.prefillTokens} prefilled at ${fmt(s.prefillTokPerS)} tok/s`,
    `answer ${s.newTokens} tokens, decode ${fmt(s.decodeTokPerS)} tok/s`,
    `bricks: ${Object.entries(s.bricks).map(([k, v]) => `${k} ${fmt(v)} ms`).join(', ') || '-'}`,
    `backends: ${Object.entries(s.backends).map(([k, v]) => `${k} ${v}`).join(', ') || '-'}`,
    `context ${s.contextTokens}/${s.maxContext} tokens · peak RSS ${fmt(s.peakRssMb, 0)} MB`,
    ...(s.power ? [`power ${s.power.state} (battery ${s.power.batteryPercent ?? '-'}${s.power.batteryPercent === null ? '' : '%'}, α ${fmt(s.power.alpha, 2)}), ${s.power.transitions.length} transition(s)`,
      ...s.power.transitions.map(transitionLine)] : []),
  ];
  return lines.join('\n');
}

/** The one-line status under the input: speed of the last turn, context use, memory. */
export function statusLine(c: Conversation, rssMb = process.memoryUsage().rss / 2 ** 20): string {
  const s = c.lastStats;
  return [
    s ? `decode ${fmt(s.decodeTokPerS)} tok/s · prefill ${fmt(s.prefillTokPerS, 0)} tok/s · TTFT ${fmt(s.ttftMs, 0)} ms` : 'ready',
    `ctx ${c.context.tokens}/${c.context.max}`,
    `RSS ${fmt(rssMb, 0)} MB (peak ${fmt(peakRssMb(), 0)})`,
  ].join(' · ');
}

/** What the next message will carry, or '' when nothing is attached. */
export function attachmentsLine(c: Conversation): string {
  const a = c.attachments;
  const files = [...a.image.map((f) => `image ${basename(f)}`), ...a.audio.map((f) => `audio ${basename(f)}`)];
  return files.length ? `attached: ${files.join(', ')}` : '';
}
