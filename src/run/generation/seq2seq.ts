/**
 * Encoder-decoder generation (Whisper; Florence-2), batch 1, as transformers.js'
 * WhisperForConditionalGeneration and Florence2ForConditionalGeneration do it:
 *
 *   1. the encoder runs once on its feeds (Whisper: the input features; Florence-2: the image features
 *      and prompt embeddings and their mask, built by ../caption.ts);
 *   2. the decoder's first run takes the whole prefix (<|startoftranscript|> <|lang|> <|task|>
 *      <|notimestamps|>; Florence-2: </s>), as ids or, for a decoder that takes inputs_embeds, as the embed
 *      brick's rows (every later step too), the encoder_attention_mask when the decoder takes one, empty
 *      past tensors and use_cache_branch = false: it projects the cross-attention
 *      K/V from encoder_hidden_states and returns them as present.{i}.encoder.*;
 *   3. every later run takes one token, the self-attention past (present.{i}.decoder.* of the run
 *      before) and the cross-attention K/V of step 2 with use_cache_branch = true. The present.{i}.encoder.*
 *      of those runs are not read: Optimum's merged graph returns dummies there;
 *   4. before picking a token, transformers.js' logits processors in its order: no_repeat_ngram_size
 *      (n-grams over the decoder sequence), forced_bos_token_id (the first generated token),
 *      forced_eos_token_id (when prefix + generated reach the length limit minus one), suppress_tokens at
 *      every step, begin_suppress_tokens at the first generated position; then greedy argmax (or the
 *      sampler); eos ends the answer.
 */
import { fail } from '../../errors.js';
import type { TensorSpec } from '../../formats/bricks.js';
import { TENSOR } from '../../formats/names.js';
import { floatToHalf } from '../../onnx/dtype.js';
import type { Feeds, TensorLike } from '../backend.js';
import type { BrickSet } from '../brick-set.js';
import { int64, isTensorLike, tensor, toFloat32 } from '../feeds.js';
import type { Seq2SeqRole, Seq2SeqDecoding } from '../seq2seq-role.js';
import { argmax, createSampler, type SamplingOptions } from './sampling.js';

export interface Seq2SeqOptions {
  /** New tokens at most (default: generation_config max_length minus the prefix). */
  readonly maxNewTokens?: number;
  /** Absent: greedy. */
  readonly sampling?: SamplingOptions;
  /** Decoder prefix; default: Whisper's from generation_config (see `whisperPrefix`). */
  readonly prefix?: readonly number[];
  readonly onToken?: (token: number) => void;
}

export interface Seq2SeqStats {
  readonly encodeMs: number;
  /** First decoder run (the prefix) and its token. */
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly prefixTokens: number;
  readonly newTokens: number;
  readonly totalMs: number;
}

export interface Seq2SeqResult {
  readonly prefix: readonly number[];
  /** Generated tokens, without the eos that ended them. */
  readonly tokens: readonly number[];
  readonly stopReason: 'eos' | 'max-tokens' | 'context-full';
  readonly stats: Seq2SeqStats;
}

/**
 * Whisper's forced prefix (transformers.js `_retrieve_init_tokens`): the start token; for a multilingual
 * model the language (default English) and task (default transcribe) tokens; then <|notimestamps|>.
 */
export function whisperPrefix(d: Seq2SeqDecoding, o: { language?: string; task?: string } = {}): number[] {
  const init = [d.decoderStartTokenId];
  if (d.isMultilingual) {
    const code = (o.language ?? 'en').replace(/^<\|(.*)\|>$/, '$1').toLowerCase();
    const lang = d.langToId[`<|${code}|>`];
    if (lang === undefined)
      throw fail('E_USAGE', `language '${o.language}': the model knows ${Object.keys(d.langToId).join(' ')}`);
    const task = d.taskToId[o.task ?? 'transcribe'];
    if (task === undefined) throw fail('E_USAGE', `task '${o.task}': the model knows ${Object.keys(d.taskToId).join(', ')}`);
    init.push(lang, task);
  } else if (o.language || o.task) {
    throw fail('E_USAGE', 'this is an English-only Whisper model: it takes no language or task');
  }
  if (d.noTimestampsTokenId !== undefined && init.at(-1) !== d.noTimestampsTokenId) init.push(d.noTimestampsTokenId);
  return init;
}

/** Float tensors as the brick declares them (an fp16 encoder may feed an fp32 decoder and the reverse). */
export function asDeclared(t: TensorLike, spec: TensorSpec | undefined, name: string): TensorLike {
  if (!spec || spec.dtype === t.type || spec.dtype === 'unknown') return t;
  if (spec.dtype === 'float32') return tensor('float32', toFloat32(t, name), t.dims);
  if (spec.dtype === 'float16' && t.type === 'float32') return tensor('float16', Uint16Array.from(t.data as Float32Array, floatToHalf), t.dims);
  throw fail('E_INPUT_DTYPE', `'${name}' is ${t.type}, but the brick takes ${spec.dtype}`);
}

/** An empty past [1, heads, 0, head_dim] of the declared dtype. */
function emptyPast(spec: TensorSpec, brick: string): TensorLike {
  const s = spec.shape;
  if (!s || s.length !== 4 || typeof s[1] !== 'number' || typeof s[3] !== 'number')
    throw fail('E_BRICKS_ROLE', `decoder '${brick}': ${spec.name} should be [batch, heads, length, head_dim] with fixed heads and head_dim, is [${s?.join(', ')}]`);
  const data = spec.dtype === 'float16' ? new Uint16Array(0) : spec.dtype === 'float32' ? new Float32Array(0) : undefined;
  if (!data) throw fail('E_UNSUPPORTED', `decoder '${brick}': ${spec.name} is ${spec.dtype}; the runtime keeps float32 or float16 caches`);
  return tensor(spec.dtype, data, [1, s[1], 0, s[3]]);
}

const lastRow = (logits: TensorLike): Float32Array => {
  const v = logits.dims.at(-1)!;
  const all = toFloat32(logits, 'logits');
  return all.slice(all.length - v);
};

/** Tokens that would repeat an n-gram of `ids` (transformers.js NoRepeatNGramLogitsProcessor). */
export function bannedNgramTokens(ids: readonly number[], n: number): number[] {
  if (n <= 0 || ids.length + 1 < n) return [];
  const tail = ids.slice(ids.length + 1 - n).join(',');
  const banned: number[] = [];
  for (let j = 0; j + n <= ids.length; j++) if (ids.slice(j, j + n - 1).join(',') === tail) banned.push(ids[j + n - 1]!);
  return banned;
}

/** Forces one of `ids`: every other logit becomes -inf. */
function force(logits: Float32Array, ids: readonly number[]): void {
  logits.fill(-Infinity);
  for (const t of ids) if (t < logits.length) logits[t] = 0;
}

/**
 * `encoderFeeds`: the encoder brick's input tensor (Whisper's input_features) or its feeds by name
 * (Florence-2: inputs_embeds and attention_mask).
 */
export async function generateSeq2Seq(set: BrickSet, role: Seq2SeqRole, encoderFeeds: TensorLike | Record<string, TensorLike>, o: Seq2SeqOptions = {}): Promise<Seq2SeqResult> {
  const d = role.decoding;
  const prefix = [...(o.prefix ?? whisperPrefix(d))];
  if (!prefix.length) throw fail('E_USAGE', 'the decoder prefix is empty');
  const room = d.maxPositions !== undefined ? d.maxPositions - prefix.length : Infinity;
  if (room < 1) throw fail('E_CONTEXT_FULL', `the prefix has ${prefix.length} tokens; the decoder has ${d.maxPositions} positions`);
  const maxNew = o.maxNewTokens ?? Math.max(1, d.maxLength - prefix.length);
  // transformers.js: max_length = prefix + max_new_tokens; forced eos at max_length - 1 tokens.
  const forcedEosAt = prefix.length + maxNew - 1;
  const sampler = o.sampling ? createSampler(o.sampling) : undefined;
  const suppress = new Set(d.suppressTokens);
  const t0 = performance.now();

  const dec = role.decoder;
  const spec = (name: string) => dec.inputs.find((i) => i.name === name);
  const given: Record<string, TensorLike> = isTensorLike(encoderFeeds) ? { [role.encoderInput.name]: encoderFeeds } : encoderFeeds;
  const encIn: Record<string, TensorLike> = {};
  for (const [name, t] of Object.entries(given)) encIn[name] = asDeclared(t, role.encoder.inputs.find((i) => i.name === name), name);
  const enc = await set.run(role.encoder.name, encIn as Feeds);
  const statesOut = enc[role.encoderOutput];
  if (!statesOut) throw fail('E_BRICK_RUN', `encoder '${role.encoder.name}' returned no '${role.encoderOutput}'`);
  const states = asDeclared(statesOut, spec(role.statesInput), role.statesInput);
  // The encoder's own mask (Florence-2: image ones + prompt mask), else all ones over the encoder output.
  const encoderMask = role.encoderMaskInput
    ? (role.vision && given[role.vision.maskInput]) || int64(new Array<number>(states.dims[1] ?? 0).fill(1))
    : undefined;
  const tokensFeed = async (tokens: readonly number[]): Promise<TensorLike> => {
    if (role.decoderTakes === 'input_ids') return int64(tokens);
    const e = role.vision!.embed;
    const r = await set.run(e.name, { [TENSOR.inputIds]: int64(tokens) } as Feeds);
    return asDeclared(need(r, TENSOR.inputsEmbeds, e.name), spec(TENSOR.inputsEmbeds), TENSOR.inputsEmbeds);
  };
  const t1 = performance.now();

  const cache = role.cache;
  let past: Record<string, TensorLike> = {};
  for (const names of cache.past) for (const n of Object.values(names)) past[n] = emptyPast(spec(n)!, dec.name);
  const cross: Record<string, TensorLike> = {};
  const ids = [...prefix];
  const out: number[] = [];
  let stopReason: Seq2SeqResult['stopReason'] = 'max-tokens';
  let t2 = t1;
  for (let step = 0; ; step++) {
    const feeds: Record<string, TensorLike> = {
      [role.decoderTakes]: await tokensFeed(step > 0 ? ids.slice(-1) : ids), [role.statesInput]: states, ...past, ...(step > 0 ? cross : {}),
      ...(encoderMask ? { [role.encoderMaskInput!]: encoderMask } : {}),
      [cache.useCacheBranch]: tensor('bool', Uint8Array.of(step > 0 ? 1 : 0), [1]),
    };
    const r = await set.run(dec.name, feeds as Feeds);
    past = {};
    cache.present.forEach((p, i) => {
      const n = cache.past[i]!;
      past[n.selfKey] = need(r, p.selfKey, dec.name);
      past[n.selfValue] = need(r, p.selfValue, dec.name);
      // Cross K/V only from the first run; later runs return dummies there (see the header).
      if (step === 0) { cross[n.crossKey] = need(r, p.crossKey, dec.name); cross[n.crossValue] = need(r, p.crossValue, dec.name); }
    });
    const logits = lastRow(need(r, 'logits', dec.name));
    for (const t of bannedNgramTokens(ids, d.noRepeatNgramSize)) logits[t] = -Infinity;
    if (d.forcedBosTokenId !== undefined && ids.length === 1) force(logits, [d.forcedBosTokenId]);
    if (d.forcedEosTokenIds.length && ids.length === forcedEosAt) force(logits, d.forcedEosTokenIds);
    for (const t of suppress) if (t < logits.length) logits[t] = -Infinity;
    if (out.length === 0) for (const t of d.beginSuppressTokens) if (t < logits.length) logits[t] = -Infinity;
    const token = sampler ? sampler(logits, ids) : argmax(logits);
    if (step === 0) t2 = performance.now();
    if (d.eosTokenIds.includes(token)) { stopReason = 'eos'; break; }
    out.push(token);
    ids.push(token);
    o.onToken?.(token);
    if (out.length >= maxNew) { stopReason = 'max-tokens'; break; }
    if (out.length >= room) { stopReason = 'context-full'; break; }
  }
  const t3 = performance.now();
  return {
    prefix, tokens: out, stopReason,
    stats: { encodeMs: t1 - t0, prefillMs: t2 - t1, decodeMs: t3 - t2, prefixTokens: prefix.length, newTokens: out.length, totalMs: t3 - t0 },
  };
}

function need(r: Record<string, TensorLike>, name: string, brick: string): TensorLike {
  const t = r[name];
  if (!t) throw fail('E_BRICK_RUN', `decoder '${brick}' returned no '${name}'`);
  return t;
}
