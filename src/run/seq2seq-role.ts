/**
 * The roles of an encoder-decoder brick set (Whisper; Florence-2): the encoder brick, the decoder brick
 * that reads its output through a `cross` connection, for Florence-2 the vision brick whose features are
 * prepended (a `prepend` merge into the encoder's inputs_embeds) and the embed brick that feeds the
 * encoder and the decoder, the decoder's cache interface in Optimum's names
 * (`past_key_values.{i}.decoder|encoder.key|value` → `present.{i}.…`, `use_cache_branch`), and the
 * decoding rules from generation_config.json (prefix tokens, suppressed tokens, eos, length).
 *
 * Read from bricks.json and the brick interfaces; nothing here runs a model.
 */
import { fail } from '../errors.js';
import type { BrickEntry, BricksManifest, TensorSpec } from '../formats/bricks.js';
import { TENSOR } from '../formats/names.js';

export interface CrossKvNames {
  readonly selfKey: string;
  readonly selfValue: string;
  readonly crossKey: string;
  readonly crossValue: string;
}

export interface Seq2SeqCache {
  readonly layers: number;
  readonly past: readonly CrossKvNames[];
  readonly present: readonly CrossKvNames[];
  /** Optimum's merged decoder: false on the first step (cross K/V computed), true after (past cross K/V reused). */
  readonly useCacheBranch: string;
}

/**
 * The decoding rules of generation_config.json over config.json: Whisper's (transformers.js
 * WhisperForConditionalGeneration / WhisperGenerationConfig) and the generic logits processors an
 * encoder-decoder such as Florence-2 sets (forced_bos/eos_token_id, no_repeat_ngram_size).
 */
export interface Seq2SeqDecoding {
  readonly decoderStartTokenId: number;
  readonly isMultilingual: boolean;
  readonly langToId: Readonly<Record<string, number>>;
  readonly taskToId: Readonly<Record<string, number>>;
  readonly noTimestampsTokenId?: number;
  readonly suppressTokens: readonly number[];
  readonly beginSuppressTokens: readonly number[];
  readonly eosTokenIds: readonly number[];
  /** Decoder positions (config max_target_positions): prefix + generated tokens never exceed it. */
  readonly maxPositions?: number;
  /** generation_config max_length (default 20, as transformers): the limit of prefix + generated tokens when no max-new-tokens is given. */
  readonly maxLength: number;
  /** Forced as the first generated token (transformers.js ForcedBOSTokenLogitsProcessor: when the sequence is 1 token long). */
  readonly forcedBosTokenId?: number;
  /** Forced as the last token when the sequence reaches max_length - 1 (ForcedEOSTokenLogitsProcessor). */
  readonly forcedEosTokenIds: readonly number[];
  /** n-grams of this size (over the decoder sequence, start token included) occur once at most; 0 = off. */
  readonly noRepeatNgramSize: number;
  /** generation_config num_beams (1 when absent); the runtime has no beam search, so it only warns. */
  readonly numBeams: number;
}
export type WhisperDecoding = Seq2SeqDecoding;

/** Florence-2: the vision brick whose features go in front of the prompt embeddings, and the embed brick. */
export interface Seq2SeqVision {
  readonly vision: BrickEntry;
  readonly visionInput: TensorSpec;
  readonly visionOutput: string;
  readonly embed: BrickEntry;
  /** The encoder input the features and prompt embeddings go into (inputs_embeds), and its mask input. */
  readonly embedsInput: string;
  readonly maskInput: string;
}

export interface Seq2SeqRole {
  readonly encoder: BrickEntry;
  readonly decoder: BrickEntry;
  readonly encoderInput: TensorSpec;
  /** The encoder output the decoder attends to. */
  readonly encoderOutput: string;
  /** The decoder input it is fed to (`encoder_hidden_states`). */
  readonly statesInput: string;
  readonly cache: Seq2SeqCache;
  readonly decoding: Seq2SeqDecoding;
  /** What carries the decoder's tokens: ids (Whisper) or the embed brick's rows (Florence-2). */
  readonly decoderTakes: 'input_ids' | 'inputs_embeds';
  /** The decoder's encoder_attention_mask input, when it has one. */
  readonly encoderMaskInput?: string;
  /** Present for a vision encoder-decoder (Florence-2). */
  readonly vision?: Seq2SeqVision;
}

type Json = Record<string, unknown>;

const split = (endpoint: string): [string, string] => {
  const dot = endpoint.indexOf('.');
  return [endpoint.slice(0, dot), endpoint.slice(dot + 1)];
};

const USE_CACHE_BRANCH = 'use_cache_branch';
const PAST = /^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(decoder|encoder)\.(key|value)$/;

/** The encoder-decoder roles when the manifest has a cross-attention connection; undefined otherwise. */
export function findSeq2SeqRole(m: BricksManifest, configs: { config?: Json; generation?: Json }): Seq2SeqRole | undefined {
  const cross = m.connections.filter((c) => c.cross);
  if (!cross.length) return undefined;
  if (cross.length !== 1)
    throw fail('E_BRICKS_ROLE', `expected one cross-attention connection, found ${cross.length}`, { notes: cross.map((c) => `${c.from} → ${c.to}`) });
  const [eb, eo] = split(cross[0]!.from);
  const [db, di] = split(cross[0]!.to);
  const encoder = m.bricks.find((b) => b.name === eb)!;
  const decoder = m.bricks.find((b) => b.name === db)!;
  const vision = visionOf(m, encoder, decoder);
  if (!vision && encoder.inputs.length !== 1)
    throw fail('E_BRICKS_ROLE', `encoder brick '${encoder.name}' should take one input, takes ${encoder.inputs.map((i) => i.name).join(', ')}`);
  const decoderTakes = vision ? TENSOR.inputsEmbeds : TENSOR.inputIds;
  if (!decoder.inputs.some((i) => i.name === decoderTakes) || !decoder.outputs.some((o) => o.name === TENSOR.logits))
    throw fail('E_BRICKS_ROLE', `decoder brick '${decoder.name}' should take ${decoderTakes} and give logits`);
  const cache = cacheOf(decoder);
  const encoderMaskInput = decoder.inputs.find((i) => i.name === ENCODER_ATTENTION_MASK)?.name;
  const known = new Set<string>([decoderTakes, di, cache.useCacheBranch, ...(encoderMaskInput ? [encoderMaskInput] : [])]);
  const unknown = decoder.inputs.filter((i) => !known.has(i.name) && !PAST.test(i.name)).map((i) => i.name);
  if (unknown.length)
    throw fail('E_BRICKS_ROLE', `decoder '${decoder.name}' has input(s) the encoder-decoder runtime does not know how to feed: ${unknown.join(', ')}`,
      { hint: 'it feeds input_ids or inputs_embeds, encoder_hidden_states, encoder_attention_mask, past_key_values.{i}.decoder|encoder.key|value and use_cache_branch' });
  return {
    encoder, decoder, encoderInput: vision ? encoder.inputs.find((i) => i.name === vision.embedsInput)! : encoder.inputs[0]!,
    encoderOutput: eo, statesInput: di, cache, decoderTakes, encoderMaskInput, vision,
    decoding: seq2seqDecoding(configs.config ?? {}, configs.generation ?? {}),
  };
}

const ENCODER_ATTENTION_MASK = 'encoder_attention_mask';

/** The prepend merge into the encoder (Florence-2): its vision brick, and the embed brick feeding encoder and decoder. */
function visionOf(m: BricksManifest, encoder: BrickEntry, decoder: BrickEntry): Seq2SeqVision | undefined {
  const into = m.connections.filter((c) => c.merge?.mode === 'prepend' && split(c.to)[0] === encoder.name);
  if (!into.length) return undefined;
  if (into.length !== 1) throw fail('E_BRICKS_ROLE', `expected one prepend merge into '${encoder.name}', found ${into.length}`);
  const [vb, vo] = split(into[0]!.from);
  const [, embedsInput] = split(into[0]!.to);
  const vision = m.bricks.find((b) => b.name === vb)!;
  const feeds = (to: string) => m.connections.find((c) => !c.merge && !c.cross && c.to === to)?.from;
  const fromEmbed = feeds(`${encoder.name}.${embedsInput}`);
  const embed = fromEmbed && m.bricks.find((b) => b.name === split(fromEmbed)[0]);
  if (!embed || embed.kind !== 'embed' || feeds(`${decoder.name}.${TENSOR.inputsEmbeds}`) !== fromEmbed)
    throw fail('E_BRICKS_ROLE', `the prompt embeddings of '${encoder.name}.${embedsInput}' and '${decoder.name}.inputs_embeds' should come from one embed brick`);
  const maskInput = encoder.inputs.find((i) => i.name === TENSOR.attentionMask)?.name;
  if (!maskInput || vision.inputs.length !== 1)
    throw fail('E_BRICKS_ROLE', `a vision encoder-decoder needs an encoder with attention_mask and a vision brick with one input`,
      { notes: [`encoder: ${encoder.inputs.map((i) => i.name).join(', ')}`, `vision: ${vision.inputs.map((i) => i.name).join(', ')}`] });
  return { vision, visionInput: vision.inputs[0]!, visionOutput: vo, embed, embedsInput, maskInput };
}

/** The merged decoder's cache interface; a decoder without it (Optimum's decoder_model / decoder_with_past_model) is refused. */
function cacheOf(dec: BrickEntry): Seq2SeqCache {
  const past = dec.inputs.filter((i) => PAST.test(i.name));
  const useCacheBranch = dec.inputs.find((i) => i.name === USE_CACHE_BRANCH)?.name;
  if (!past.length || !useCacheBranch)
    throw fail('E_BRICKS_ROLE', `decoder '${dec.name}' is not a merged decoder: it needs past_key_values.{i}.decoder|encoder.* and use_cache_branch inputs`,
      { hint: 'use decoder_model_merged.onnx (Optimum merges decoder_model and decoder_with_past_model into it)' });
  const layers = Math.max(...past.map((p) => Number(PAST.exec(p.name)![1]))) + 1;
  const issues: string[] = [];
  const names = (re: RegExp, list: readonly TensorSpec[], prefix: string, i: number): CrossKvNames => {
    const find = (part: string, kv: string) => {
      const n = list.find((t) => { const x = re.exec(t.name); return x && Number(x[1]) === i && x[2] === part && x[3] === kv; })?.name;
      if (!n) issues.push(`layer ${i}: missing ${prefix}.${i}.${part}.${kv}`);
      return n ?? '';
    };
    return { selfKey: find('decoder', 'key'), selfValue: find('decoder', 'value'), crossKey: find('encoder', 'key'), crossValue: find('encoder', 'value') };
  };
  const out = { past: [] as CrossKvNames[], present: [] as CrossKvNames[] };
  for (let i = 0; i < layers; i++) {
    out.past.push(names(PAST, dec.inputs, 'past_key_values', i));
    out.present.push(names(PRESENT, dec.outputs, 'present', i));
  }
  if (issues.length) throw fail('E_BRICKS_ROLE', `decoder '${dec.name}': incomplete encoder-decoder cache interface: ${issues[0]}`, { notes: issues });
  return { layers, ...out, useCacheBranch };
}

/** generation_config.json over config.json, as transformers.js merges them. */
function seq2seqDecoding(config: Json, generation: Json): Seq2SeqDecoding {
  const g = { ...config, ...generation };
  const ids = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => Number.isInteger(x)) : Number.isInteger(v) ? [v as number] : []);
  const map = (v: unknown): Record<string, number> => (v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, number> : {});
  const start = g.decoder_start_token_id;
  if (!Number.isInteger(start))
    throw fail('E_CONFIG_INVALID', 'generation_config.json / config.json give no decoder_start_token_id for the encoder-decoder model',
      { hint: 'add decoder_start_token_id (Whisper: the id of <|startoftranscript|>)' });
  const int = (v: unknown): number | undefined => (Number.isInteger(v) ? v as number : undefined);
  return {
    decoderStartTokenId: start as number,
    isMultilingual: g.is_multilingual === true,
    langToId: map(g.lang_to_id), taskToId: map(g.task_to_id),
    noTimestampsTokenId: int(g.no_timestamps_token_id),
    suppressTokens: ids(g.suppress_tokens), beginSuppressTokens: ids(g.begin_suppress_tokens),
    eosTokenIds: ids(g.eos_token_id), maxPositions: int(config.max_target_positions) ?? int((config.text_config as Json | undefined)?.max_position_embeddings),
    // transformers' GenerationConfig default when the model sets none (Florence-2's generation_config.json sets none).
    maxLength: int(g.max_length) ?? 20,
    forcedBosTokenId: int(g.forced_bos_token_id), forcedEosTokenIds: ids(g.forced_eos_token_id), noRepeatNgramSize: int(g.no_repeat_ngram_size) ?? 0,
    numBeams: int(g.num_beams) ?? 1,
  };
}
