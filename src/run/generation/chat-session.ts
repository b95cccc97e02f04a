/**
 * Text generation over a brick set, with the KV cache kept across turns.
 *
 * A `ChatSession` holds one conversation: the tokens fed so far, their embeddings (the arena in
 * `Sequence`) and the decoder's KV cache. Each `generate` call gets the whole conversation; the longest
 * prefix that matches what is cached (same tokens, same mask, and for placeholder tokens the same
 * feature rows) is reused, the cache is cut back to it, and only the rest is prefilled. Feature rows for
 * placeholders inside the reused prefix may be omitted, so a follow-up turn about the same image does
 * not run the vision encoder again.
 *
 * Prefill: embed brick → arena rows (written in place), feature rows copied over the placeholder rows
 * once, decoder on a view of the new rows. Decode: one token per step; the decoder's present KV is the
 * next step's past (a GroupQueryAttention decoder writes it in place into shared buffers: ./kv-cache.ts).
 * A decoder without KV inputs (e.g. cut from a monolithic graph) is run on the whole sequence every
 * step, which is correct but quadratic.
 *
 * Batch 1. Left padding is given by `attentionMask` (zeros first); positions are cumsum(mask) - 1.
 */
import { fail, isNanomindError } from '../../errors.js';
import { replacePlaceholderRows } from '../../formats/merge.js';
import { TENSOR } from '../../formats/names.js';
import { elementCount, type BrickSession, type TensorLike } from '../backend.js';
import { floatToHalf } from '../../onnx/dtype.js';
import type { KvCacheMode } from '../../formats/bricks.js';
import type { BrickSet } from '../brick-set.js';
import { checkFeeds, resolveDims, tensor, toFloat32 } from '../feeds.js';
import { stepFeeds } from './decoder-inputs.js';
import { mropeContinuation } from './full-pass.js';
import { KvCache } from './kv-cache.js';
import { createSampler, type SamplingOptions } from './sampling.js';
import { Sequence } from './sequence.js';
import { TextStream } from './text-stream.js';

export interface GenerateRequest {
  /** The whole conversation so far, batch 1. */
  readonly inputIds: readonly number[];
  /** 1 = token, 0 = padding; padding only at the start. Default all 1. */
  readonly attentionMask?: readonly number[];
  /** Feature rows per placeholder token id: [rows, hidden] float32 (an encode() result, a TABM slot view). */
  readonly features?: Readonly<Record<number, Float32Array>>;
  /**
   * mRoPE decoders (Qwen2-VL): the three position rows (temporal, height, width) of every token of
   * `inputIds`, axis-major [3 × inputIds.length], as the family's rope index gives them. Absent: text
   * positions on all three rows. Generated tokens continue at max + 1.
   */
  readonly mropePositions?: BigInt64Array;
}

export interface TokenEvent {
  readonly token: number;
  readonly index: number;
  /** New text safe to show (only with `decode`). */
  readonly text?: string;
}

export interface GenerateOptions {
  readonly maxNewTokens?: number;
  /** Absent: greedy. Otherwise `createSampler`'s options and defaults (temperature 1). */
  readonly sampling?: SamplingOptions;
  /** Default: the brick set's eos ids. The stop token is returned as the last token. */
  readonly stopTokenIds?: readonly number[];
  /** Need `decode`. Generation stops once the text contains one; the text is cut before it. */
  readonly stopStrings?: readonly string[];
  readonly decode?: (ids: readonly number[]) => string;
  /** Called per generated token; returning false stops generation. */
  readonly onToken?: (e: TokenEvent) => void | boolean;
  readonly signal?: AbortSignal;
}

export type StopReason = 'eos' | 'stop-string' | 'max-tokens' | 'context-full' | 'callback' | 'aborted';

export interface GenerationStats {
  readonly promptTokens: number;
  /** Prompt tokens whose KV came from the cache instead of being prefilled. */
  readonly reusedTokens: number;
  readonly prefillTokens: number;
  readonly newTokens: number;
  /** From the call to the first sampled token. */
  readonly ttftMs: number;
  readonly prefillMs: number;
  readonly prefillTokPerS: number;
  /** Steps after the first token: one decoder run + sampling each. */
  readonly decodeMs: number;
  readonly decodeTokPerS: number;
  readonly totalMs: number;
  /** Wall time per brick in this call. */
  readonly brickMs: Readonly<Record<string, number>>;
}

export interface GenerateResult {
  readonly tokens: readonly number[];
  readonly text?: string;
  readonly stopReason: StopReason;
  readonly seed?: number;
  readonly stats: GenerationStats;
}

export interface ChatSessionOptions {
  /** Tokens the arena and cache can hold. Default: max_position_embeddings capped at 4096. */
  readonly maxContext?: number;
  /** How the KV cache is kept; default what bricks.json says for the decoder (absent: 'concat'). */
  readonly kvCache?: KvCacheMode;
  /** Shared-buffer mode: the buffers hold the rows in use rounded up to a multiple of this (default 64). */
  readonly kvGrowRows?: number;
}

const DEFAULT_MAX_NEW = 256;

export class ChatSession {
  private readonly seq: Sequence;
  private kv: KvCache | undefined;
  /**
   * The decoder backend's own KV cache (the native engine, RKLLM), found when the decoder session first opens: then no
   * KvCache is kept here, no past/present cross the contract, and prefix reuse cuts the backend's cache instead.
   */
  private own: BrickSession['ownsKv'];
  private ownChecked = false;
  /** mRoPE positions, axis-major [3 × capacity], and the offset of generated tokens' positions. */
  private readonly mrope: BigInt64Array | undefined;
  private ropeDelta = 0n;
  /** float16 copy of the arena rows for a decoder that takes float16 inputs_embeds. */
  private readonly half: Uint16Array | undefined;
  private busy = false;

  constructor(readonly set: BrickSet, opts: ChatSessionOptions = {}) {
    const conv = set.decoder.inputs;
    this.seq = new Sequence(opts.maxContext ?? Math.min(set.maxPositions ?? 4096, 4096),
      set.decoder.takes === 'inputs_embeds' ? set.hidden : undefined, conv.positionStart);
    if (opts.kvCache && !set.decoder.kv) throw fail('E_BAD_OPTION', `kvCache '${opts.kvCache}' given, but decoder '${set.decoder.brick.name}' has no KV cache`);
    this.kv = set.decoder.kv ? new KvCache(set.decoder.kv, { maxLength: this.seq.capacity, mode: opts.kvCache, growRows: opts.kvGrowRows }) : undefined;
    this.mrope = conv.positions === 'mrope' ? new BigInt64Array(3 * this.seq.capacity) : undefined;
    this.half = conv.takes === 'inputs_embeds' && conv.embedsType === 'float16' ? new Uint16Array(this.seq.embeds!.length) : undefined;
  }

  /** Tokens whose state (embeddings, KV) the session holds. */
  get tokens(): readonly number[] { return this.seq.tokens; }
  get maxContext(): number { return this.seq.capacity; }
  /** The decoder's KV cache (absent without one): its mode, length and, in shared mode, its buffers. */
  get kvCache(): KvCache | undefined { return this.kv; }

  reset(): void {
    this.seq.truncate(0);
    this.kv?.reset();
    this.own?.truncate(0);
  }

  /** Whether the decoder keeps state across steps (a KvCache here or the backend's own). */
  private get cached(): boolean { return this.kv !== undefined || this.own !== undefined; }

  private async checkOwnKv(): Promise<void> {
    if (this.ownChecked) return;
    const s = await this.set.session(this.set.decoder.brick.name);
    this.ownChecked = true;
    if (s.ownsKv && this.set.decoder.kv) { this.own = s.ownsKv; this.kv = undefined; }
  }

  async generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    if (this.busy) throw fail('E_SESSION_BUSY', 'this chat session is already generating', { hint: 'await the previous generate() or use another session' });
    this.busy = true;
    try {
      return await this.run(req, opts);
    } finally {
      this.busy = false;
    }
  }

  private async run(req: GenerateRequest, o: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const before = this.set.brickMs();
    const ids = req.inputIds;
    const maxNew = o.maxNewTokens ?? DEFAULT_MAX_NEW;
    if (!(Number.isSafeInteger(maxNew) && maxNew >= 1)) throw fail('E_BAD_OPTION', `maxNewTokens must be an integer ≥ 1, got ${maxNew}`);
    if (o.stopStrings?.length && !o.decode) throw fail('E_BAD_OPTION', 'stopStrings need a decode function', { hint: 'pass decode: (ids) => tokenizer.decode(ids)' });
    this.checkRequest(req);
    await this.checkOwnKv();
    const features = this.featureMap(req);
    const sample = createSampler(o.sampling ?? { temperature: 0 });
    const stops = new Set(o.stopTokenIds ?? this.set.eosTokenIds);
    const stream = o.decode ? new TextStream(o.decode, o.stopStrings) : undefined;

    // Reuse the cached prefix, but always prefill at least one token: its logits start the answer.
    const match = this.matchPrefix(req, features);
    const reuse = Math.min(match, ids.length - 1);
    if (ids.length + 1 > this.seq.capacity)
      throw fail('E_CONTEXT_OVERFLOW', `the prompt has ${ids.length} tokens; the ${this.seq.capacity}-token context leaves no room to answer`,
        { hint: 'raise maxContext or shorten the conversation' });
    this.truncate(reuse);
    // Rows whose KV really comes from a cache: a backend that must send a cut-back prefix again (RKLLM) says so.
    const reused = !this.cached ? 0 : this.own?.resident ? Math.min(reuse, this.own.resident()) : reuse;
    const generated: number[] = [];
    let reason: StopReason | undefined;
    let ttft = 0, tFirst = 0, text: string | undefined;
    try {
      this.seq.append(ids.slice(reuse), req.attentionMask?.slice(reuse));
      this.promptPositions(req, reuse);
      if (this.seq.embeds) await this.embed(reuse, ids.length, req, features);
      let logits = await this.step(reuse, ids.length, req, o.signal);
      const tPrefill = performance.now();
      const history = [...ids];
      while (!reason) {
        if (!logits) {
          // The backend stopped the step in flight (RKLLM's rkllm_abort): nothing of it is cached.
          reason = 'aborted';
          this.seq.truncate(this.own ? this.own.length() : this.kv?.length ?? 0);
          text = stream?.finish().text;
          break;
        }
        const tok = sample(logits, history);
        generated.push(tok);
        history.push(tok);
        if (generated.length === 1) tFirst = performance.now(), ttft = tFirst - t0;
        const piece = stream?.push(stops.has(tok) ? generated.slice(0, -1) : generated);
        if (stops.has(tok)) reason = 'eos';
        else if (piece?.stopAt !== undefined) reason = 'stop-string';
        else if (generated.length >= maxNew) reason = 'max-tokens';
        else if (this.seq.length + 1 > this.seq.capacity) reason = 'context-full';
        let delta = piece?.delta;
        if (reason && stream) {
          // The last event also carries what was held back (a stop-string look-alike, a partial character).
          const end = stream.finish(piece?.stopAt);
          text = end.text;
          delta = (delta ?? '') + end.delta;
        }
        if (o.onToken?.({ token: tok, index: generated.length - 1, text: delta }) === false) reason ??= 'callback';
        if (o.signal?.aborted) reason ??= 'aborted';
        if (reason) {
          text ??= stream?.finish().text;
          break;
        }
        const n = this.seq.length;
        this.seq.append([tok]);
        if (this.mrope) for (let a = 0; a < 3; a++) this.mrope[a * this.seq.capacity + n] = this.seq.positions[n]! + this.ropeDelta;
        if (this.seq.embeds) await this.embed(n, n + 1, req, features);
        logits = await this.step(n, n + 1, req, o.signal);
      }
      const end = performance.now();
      const prefillMs = tPrefill - t0;
      const decodeMs = generated.length ? end - tFirst : 0;
      const steps = generated.length - 1;
      const after = this.set.brickMs();
      return {
        tokens: generated, text, stopReason: reason!, seed: o.sampling ? sample.seed : undefined,
        stats: {
          promptTokens: ids.length, reusedTokens: reused, prefillTokens: ids.length - reused,
          newTokens: generated.length, ttftMs: ttft, prefillMs, prefillTokPerS: rate(ids.length - reused, prefillMs),
          decodeMs, decodeTokPerS: rate(steps, decodeMs), totalMs: end - t0,
          brickMs: Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => (v as number) > 0)),
        },
      };
    } catch (e) {
      // Keep only state the decoder has consumed, so the session stays usable after a failed call.
      this.seq.truncate(this.kv ? this.kv.length : this.own ? this.own.length() : 0);
      throw e;
    }
  }

  private truncate(n: number): void {
    this.seq.truncate(n);
    this.kv?.truncate(Math.min(n, this.kv.length));
    this.own?.truncate(n);
  }

  private checkRequest(req: GenerateRequest): void {
    const { inputIds: ids, attentionMask: mask } = req;
    if (!Array.isArray(ids) || ids.length === 0) throw fail('E_BAD_INPUT', 'inputIds must be a non-empty array of token ids');
    const vocab = this.set.decoder.vocab;
    const bad = ids.findIndex((t) => !Number.isSafeInteger(t) || t < 0 || (vocab !== undefined && t >= vocab));
    if (bad >= 0) throw fail('E_BAD_INPUT', `inputIds[${bad}] = ${ids[bad]} is not a token id${vocab ? ` (vocabulary: ${vocab})` : ''}`);
    if (req.mropePositions && req.mropePositions.length !== 3 * ids.length)
      throw fail('E_BAD_INPUT', `mropePositions holds ${req.mropePositions.length} values for ${ids.length} tokens (need 3 × ${ids.length})`);
    if (!mask) return;
    if (mask.length !== ids.length) throw fail('E_BAD_INPUT', `attentionMask has ${mask.length} entries for ${ids.length} tokens`);
    const first = mask.indexOf(1);
    if (first < 0 || mask.some((m, i) => (i < first ? m !== 0 : m !== 1)))
      throw fail('E_BAD_INPUT', 'attentionMask must be 0 for left padding and then 1 for every token', { hint: 'batch 1 supports left padding only' });
    // GroupQueryAttention writes the new rows at sum(mask) − 1: padding would put them before the padding's end.
    if (first > 0 && this.kv?.mode === 'shared-buffer')
      throw fail('E_BAD_INPUT', 'attentionMask has left padding, which a shared-buffer KV cache (GroupQueryAttention) cannot take', { hint: 'batch 1 needs no padding: drop it' });
  }

  /** Features by placeholder id, checked against the placeholder counts of the whole conversation. */
  private featureMap(req: GenerateRequest): Map<number, Float32Array> {
    const map = new Map<number, Float32Array>();
    const h = this.set.hidden;
    for (const [key, f] of Object.entries(req.features ?? {})) {
      const id = Number(key);
      if (!this.set.encoders.some((e) => e.placeholderTokenId === id))
        throw fail('E_BAD_INPUT', `features given for token ${id}, but no encoder of this brick set merges into that token`,
          { notes: this.set.encoders.map((e) => `${e.kind}: token ${e.placeholderTokenId}`) });
      if (!h || this.set.decoder.takes !== 'inputs_embeds') throw fail('E_BRICKS_ROLE', 'this decoder takes input_ids; features cannot be merged');
      const slots = req.inputIds.reduce((n, t) => n + (t === id ? 1 : 0), 0);
      if (f.length !== slots * h)
        throw fail('E_MERGE_COUNT', `the prompt has ${slots} placeholder token(s) (id ${id}) but ${f.length / h} feature rows were given`,
          { hint: 'expand each image/audio placeholder to the number of feature rows the encoder emits' });
      map.set(id, f);
    }
    return map;
  }

  /** Length of the cached prefix that the request repeats exactly. */
  private matchPrefix(req: GenerateRequest, features: Map<number, Float32Array>): number {
    const seq = this.seq;
    const limit = Math.min(seq.length, req.inputIds.length);
    const h = this.set.hidden ?? 0;
    const used = new Map<number, number>();
    for (let i = 0; i < limit; i++) {
      const t = req.inputIds[i]!;
      if (seq.tokens[i] !== t || seq.maskAt(i) !== (req.attentionMask?.[i] ?? 1)) return i;
      const f = features.get(t);
      if (!f) continue;
      const k = used.get(t) ?? 0;
      used.set(t, k + 1);
      if (!sameRow(seq.rows(i, i + 1), f.subarray(k * h, (k + 1) * h))) return i;
    }
    return limit;
  }

  /** Embeds rows [from, to) into the arena, then copies feature rows over their placeholders. */
  private async embed(from: number, to: number, req: GenerateRequest, features: Map<number, Float32Array>): Promise<void> {
    const e = this.set.embed!;
    const rows = this.seq.rows(from, to);
    const feeds = { [e.inputs[0]!.name]: tensor('int64', this.seq.ids.subarray(from, to), [1, to - from]) };
    const spec = e.outputs[0]!;
    const dims = resolveDims(spec.shape, checkFeeds(e.name, e.inputs, feeds));
    if (dims && spec.dtype === 'float32' && elementCount(dims) === rows.length) {
      await this.set.run(e.name, feeds, { outputs: { [spec.name]: tensor('float32', rows, dims) } });
    } else {
      const out = await this.set.run(e.name, feeds);
      const t = out[spec.name];
      if (!t || t.data.length !== rows.length) throw fail('E_BRICK_RUN', `embed brick '${e.name}' returned ${t?.data.length ?? 0} values for ${to - from} tokens`);
      rows.set(toFloat32(t, spec.name));
    }
    // Feature rows go to the request's placeholders only: a placeholder id the model generates is embedded
    // as text, as Hugging Face does (after the first step it passes no pixel_values).
    const end = Math.min(to, req.inputIds.length);
    if (end <= from) return;
    const h = this.set.hidden!;
    const ids = this.seq.tokens.slice(from, end);
    for (const enc of this.set.encoders) {
      const id = enc.placeholderTokenId;
      if (!ids.includes(id)) continue;
      const f = features.get(id);
      if (!f)
        throw fail('E_MERGE_MISSING', `the prompt has ${enc.kind} placeholder tokens (id ${id}) that are not cached, but no features were given for them`,
          { hint: `run the ${enc.kind} encoder (brickSet.encode) and pass its rows in features[${id}]` });
      const before = req.inputIds.slice(0, from).reduce((n, t) => n + (t === id ? 1 : 0), 0);
      replacePlaceholderRows(rows.subarray(0, (end - from) * h), ids, id, f.subarray(before * h), h);
    }
  }

  /** mRoPE rows of the prompt tokens [from, inputIds.length), and the offset generated tokens continue from. */
  private promptPositions(req: GenerateRequest, from: number): void {
    if (!this.mrope) return;
    const n = req.inputIds.length, cap = this.seq.capacity, given = req.mropePositions;
    for (let a = 0; a < 3; a++)
      for (let i = from; i < n; i++) this.mrope[a * cap + i] = given ? given[a * n + i]! : this.seq.positions[i]!;
    // Generated tokens sit at seq.positions + delta, which puts the first one where mropeContinuation says.
    this.ropeDelta = given ? mropeContinuation(given) - this.seq.positions[n - 1]! - 1n : 0n;
  }

  /**
   * Runs the decoder on positions [from, to) and returns the last row of logits; undefined when `signal`
   * fired and the backend stopped the run in flight (E_ABORTED).
   */
  private async step(from: number, to: number, req: GenerateRequest, signal?: AbortSignal): Promise<Float32Array | undefined> {
    const dec = this.set.decoder;
    const conv = dec.inputs;
    const start = this.cached ? from : 0; // without a cache the decoder must see every position
    const S = to - start;
    let positions3: BigInt64Array | undefined;
    if (this.mrope) {
      positions3 = new BigInt64Array(3 * S);
      for (let a = 0; a < 3; a++) positions3.set(this.mrope.subarray(a * this.seq.capacity + start, a * this.seq.capacity + to), a * S);
    }
    let featureRows: Uint8Array | undefined;
    if (conv.tokenTypeIds) {
      const ids = new Set(this.set.encoders.map((e) => e.placeholderTokenId));
      featureRows = Uint8Array.from({ length: S }, (_, k) => (start + k < req.inputIds.length && ids.has(this.seq.tokens[start + k]!) ? 1 : 0));
    }
    this.kv?.reserve(to);
    const feeds: Record<string, TensorLike> = {
      ...(this.kv ? this.kv.feeds() : {}),
      ...stepFeeds(conv, { from: start, to, mask: this.seq.mask, positions: this.seq.positions.subarray(start, to), positions3, featureRows }),
    };
    if (conv.takes === 'input_ids') feeds[TENSOR.inputIds] = tensor('int64', this.seq.ids.subarray(start, to), [1, S]);
    else if (this.half) {
      const rows = this.seq.rows(start, to);
      const out = this.half.subarray(start * this.set.hidden!, to * this.set.hidden!);
      for (let i = 0; i < rows.length; i++) out[i] = floatToHalf(rows[i]!);
      feeds[TENSOR.inputsEmbeds] = tensor('float16', out, [1, S, this.set.hidden!]);
    } else feeds[TENSOR.inputsEmbeds] = tensor('float32', this.seq.rows(start, to), [1, S, this.set.hidden!]);
    const presents = this.kv?.outputs();
    let out;
    try {
      out = await this.set.run(dec.brick.name, feeds, presents || signal ? { ...(presents ? { outputs: presents } : {}), signal } : undefined);
    } catch (e) {
      if (signal?.aborted && isNanomindError(e) && e.code === 'E_ABORTED') return undefined;
      throw e;
    }
    this.kv?.adopt(out, to);
    const logits = out[TENSOR.logits];
    if (!logits) throw fail('E_BRICK_RUN', `decoder '${dec.brick.name}' returned no logits`);
    // Only the last row is sampled: convert just that one from float16.
    const V = logits.dims.at(-1)!;
    return toFloat32(tensor(logits.type, logits.data.subarray(logits.data.length - V), [V]), TENSOR.logits);
  }
}

/** One-shot generation in a fresh session (no reuse). */
export async function generate(set: BrickSet, req: GenerateRequest, opts: GenerateOptions & ChatSessionOptions = {}): Promise<GenerateResult> {
  return new ChatSession(set, opts).generate(req, opts);
}

const rate = (tokens: number, ms: number): number => (ms > 0 ? (tokens * 1000) / ms : 0);

function sameRow(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}
