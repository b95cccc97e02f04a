/**
 * Text ⇄ token ids for the runtime, over @huggingface/tokenizers (the same engine transformers.js uses,
 * so ids match it and, through it, Hugging Face's `tokenizers`).
 *
 * Reads from a model folder:
 *   tokenizer.json            required: model, normalizer, pre-tokenizer, post-processor, decoder, added tokens
 *   tokenizer_config.json     optional: bos/eos/pad/unk token strings, additional_special_tokens,
 *                             clean_up_tokenization_spaces, chat_template (read by chat-template.ts)
 *   generation_config.json    optional: eos_token_id (a number or a list) — models such as Qwen2 stop on
 *                             more ids than the tokenizer's single eos_token, so both are stop ids
 *
 * A missing or unparsable tokenizer.json, or one the library rejects, is E_TOKENIZER.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { fail } from '../../errors.js';
import { readJsonFile } from '../../formats/json-file.js';

export interface EncodeOptions {
  /** Apply the post-processor's special tokens (e.g. a BOS); default true, as in Hugging Face. */
  readonly addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (added tokens marked special, additional_special_tokens); default false. */
  readonly skipSpecialTokens?: boolean;
}

/** The token strings a chat template sees as `bos_token`, `eos_token`, … (absent when unset). */
export interface SpecialTokenStrings {
  readonly bos_token?: string;
  readonly eos_token?: string;
  readonly unk_token?: string;
  readonly sep_token?: string;
  readonly pad_token?: string;
  readonly cls_token?: string;
  readonly mask_token?: string;
}

export interface TextTokenizer {
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** Ids that end generation: the tokenizer's eos_token plus generation_config.json's eos_token_id. */
  readonly eosIds: readonly number[];
  readonly bosId?: number;
  readonly padId?: number;
  /** Ids of added tokens flagged special. */
  readonly specialIds: ReadonlySet<number>;
  readonly specialTokens: SpecialTokenStrings;
  /** One past the largest id the tokenizer knows (model vocab plus added tokens). */
  readonly vocabSize: number;
  /** tokenizer_config.json as read ({} when absent). */
  readonly config: Readonly<Record<string, unknown>>;
  readonly dir: string;
}

const TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

const exists = (file: string) => access(file).then(() => true, () => false);

/** A token entry in tokenizer_config.json is a string or an AddedToken object with `content`. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

function idList(v: unknown): number[] {
  const xs = Array.isArray(v) ? v : [v];
  return xs.filter((x): x is number => Number.isInteger(x) && x >= 0);
}

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const file = join(dir, 'tokenizer.json');
  const json = await readJsonFile(file, 'E_TOKENIZER');
  if (!isObject(json) || !isObject(json.model))
    throw fail('E_TOKENIZER', `${file}: not a Hugging Face tokenizer.json (no "model" object)`, { file });

  const configFile = join(dir, 'tokenizer_config.json');
  const config = (await exists(configFile)) ? await readJsonFile(configFile, 'E_TOKENIZER') : {};
  if (!isObject(config)) throw fail('E_TOKENIZER', `${configFile}: expected a JSON object`, { file: configFile });
  // The library reads additional_special_tokens as strings; newer configs may hold AddedToken objects.
  const libConfig = { ...config };
  if (Array.isArray(config.additional_special_tokens))
    libConfig.additional_special_tokens = config.additional_special_tokens.map(tokenString).filter((s) => s !== undefined);

  // The library validates by key presence; fill the optional stages so a minimal file is accepted.
  const full = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...json };
  let tok: HfTokenizer;
  try {
    tok = new HfTokenizer(full, libConfig);
  } catch (e) {
    throw fail('E_TOKENIZER', `${file}: cannot build the tokenizer (${(e as Error).message})`, { file }, e);
  }

  const genFile = join(dir, 'generation_config.json');
  const gen = (await exists(genFile)) ? await readJsonFile(genFile, 'E_TOKENIZER') : {};

  const specialTokens: Record<string, string> = {};
  for (const k of TOKEN_KEYS) {
    const s = tokenString(config[k]);
    if (s !== undefined) specialTokens[k] = s;
  }
  const idOf = (s: string | undefined) => (s === undefined ? undefined : tok.token_to_id(s));

  const eosIds = [...new Set([
    ...idList(idOf(specialTokens.eos_token)),
    ...(isObject(gen) ? idList(gen.eos_token_id) : []),
  ])];
  const specialIds = new Set<number>();
  for (const [id, t] of tok.get_added_tokens_decoder()) if (t.special) specialIds.add(id);
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

  return {
    encode: (text, opts = {}) => tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids,
    decode(ids, opts = {}) {
      // Models often pad their vocab past the tokenizer's (e.g. for alignment); those ids have no text.
      const known = ids.filter((i) => Number.isInteger(i) && i >= 0 && tok.id_to_token(i) !== undefined);
      return known.length ? tok.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false }) : '';
    },
    tokenToId: (s) => tok.token_to_id(s),
    idToToken: (i) => tok.id_to_token(i),
    eosIds,
    bosId: idOf(specialTokens.bos_token),
    padId: idOf(specialTokens.pad_token),
    specialIds,
    specialTokens,
    vocabSize,
    config,
    dir,
  };
}

export interface StreamDecoder {
  /** Appends one generated id; returns the text it completes ('' while a character is still partial). */
  push(id: number): string;
  /** Returns whatever is held back (end of generation), including a trailing partial character as U+FFFD. */
  flush(): string;
  /** All ids pushed so far. */
  readonly ids: readonly number[];
}

/**
 * Incremental detokenizer for streaming output. Decoding one token at a time is wrong twice over: a
 * byte-level token can hold part of a UTF-8 character (decoded alone it is U+FFFD), and decoders such
 * as SentencePiece's drop the leading space of the first token of a sequence. So this decodes a small
 * window — the tokens already emitted since the last boundary (context) plus the new ones — and emits
 * the part past the context's text, holding everything back while the window ends in U+FFFD. This is
 * the prefix/read-offset scheme of Hugging Face text-generation-inference.
 */
export function createStreamDecoder(tok: Pick<TextTokenizer, 'decode'>, opts: DecodeOptions = {}): StreamDecoder {
  const decodeOpts = { skipSpecialTokens: opts.skipSpecialTokens ?? true }; // chat output hides <|im_end|> & co.
  const ids: number[] = [];
  let prefixOffset = 0; // start of the context window
  let readOffset = 0; // end of the ids whose text has been emitted
  const text = (from: number, to = ids.length) => tok.decode(ids.slice(from, to), decodeOpts);
  return {
    ids,
    push(id) {
      ids.push(id);
      const prefix = text(prefixOffset, readOffset);
      const next = text(prefixOffset);
      if (next.length <= prefix.length || next.endsWith('\uFFFD')) return '';
      prefixOffset = readOffset;
      readOffset = ids.length;
      return next.slice(prefix.length);
    },
    flush() {
      const prefix = text(prefixOffset, readOffset);
      const rest = text(prefixOffset).slice(prefix.length);
      if (rest) [prefixOffset, readOffset] = [readOffset, ids.length];
      return rest;
    },
  };
}
