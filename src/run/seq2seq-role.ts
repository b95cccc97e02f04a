/**
 * The roles of an encoder-decoder brick set (Whisper): the encoder brick, the decoder brick that reads
 * its output through a `cross` connection, the decoder's cache interface in Optimum's names
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

/** Whisper's decoding rules (transformers.js WhisperForConditionalGeneration / WhisperGenerationConfig). */
export interface WhisperDecoding {
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
  /** generation_config max_length: the default limit of prefix + generated tokens when no max-new-tokens is given. */
  readonly maxLength?: number;
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
  readonly decoding: WhisperDecoding;
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
  if (encoder.inputs.length !== 1)
    throw fail('E_BRICKS_ROLE', `encoder brick '${encoder.name}' should take one input, takes ${encoder.inputs.map((i) => i.name).join(', ')}`);
  if (!decoder.inputs.some((i) => i.name === TENSOR.inputIds) || !decoder.outputs.some((o) => o.name === TENSOR.logits))
    throw fail('E_BRICKS_ROLE', `decoder brick '${decoder.name}' should take input_ids and give logits`);
  const cache = cacheOf(decoder);
  const known = new Set<string>([TENSOR.inputIds, di, cache.useCacheBranch]);
  const unknown = decoder.inputs.filter((i) => !known.has(i.name) && !PAST.test(i.name)).map((i) => i.name);
  if (unknown.length)
    throw fail('E_BRICKS_ROLE', `decoder '${decoder.name}' has input(s) the encoder-decoder runtime does not know how to feed: ${unknown.join(', ')}`,
      { hint: 'it feeds input_ids, encoder_hidden_states, past_key_values.{i}.decoder|encoder.key|value and use_cache_branch' });
  return {
    encoder, decoder, encoderInput: encoder.inputs[0]!, encoderOutput: eo, statesInput: di, cache,
    decoding: whisperDecoding(configs.config ?? {}, configs.generation ?? {}),
  };
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
function whisperDecoding(config: Json, generation: Json): WhisperDecoding {
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
    eosTokenIds: ids(g.eos_token_id), maxPositions: int(config.max_target_positions), maxLength: int(g.max_length),
  };
}
