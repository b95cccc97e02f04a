/**
 * Chat messages → prompt text → token ids with the multimodal placeholders expanded.
 *
 * Template source, first found wins (as Hugging Face processors load them):
 *   chat_template.jinja                      a raw Jinja file
 *   chat_template.json                       {"chat_template": "..."} (processor template)
 *   tokenizer_config.json  chat_template     a string, or a list of {name, template} (pick by name,
 *                                            else "default")
 * Rendering uses @huggingface/jinja with the context transformers.js gives: `messages`,
 * `add_generation_prompt`, the special-token strings (`bos_token`, `eos_token`, …), `tools`, `documents`,
 * plus caller extras; `raise_exception` and `strftime_now` are built in.
 *
 * The rendered text is encoded without extra special tokens (the template already wrote them). Then each
 * single image (audio) placeholder id becomes N copies, N being the encoder's feature rows for that item —
 * what Hugging Face processors do by repeating the placeholder string before tokenizing — and the
 * positions are returned so the features can replace those rows of the embeddings.
 */
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { fail } from '../../errors.js';
import { readJsonFile } from '../../formats/json-file.js';
import type { TextTokenizer } from './tokenizer.js';

export type ContentPart =
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'image' }
  | { readonly type: 'audio' };

export interface ChatMessage {
  readonly role: string;
  readonly content: string | readonly ContentPart[];
}

export type MediaKind = 'image' | 'audio';

export interface RenderOptions {
  readonly addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. `tools`, `enable_thinking`). */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** A placeholder id and how many feature rows one item produces (`undefined`: the caller must say). */
export interface Placeholder {
  readonly tokenId: number;
  readonly count?: number;
}

/** Per kind: one count for every item, or one count per item in prompt order. */
export type PlaceholderCounts = Partial<Record<MediaKind, number | readonly number[]>>;

export interface PlaceholderSpan {
  readonly kind: MediaKind;
  /** Which item of its kind (0-based, prompt order). */
  readonly index: number;
  readonly tokenId: number;
  /** First expanded position in the ids, and the number of rows. */
  readonly start: number;
  readonly length: number;
}

export interface EncodedPrompt {
  readonly text: string;
  readonly ids: number[];
  readonly spans: PlaceholderSpan[];
}

export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';
export const PROCESSOR_TEMPLATE_FILE = 'chat_template.json';

const exists = (file: string) => access(file).then(() => true, () => false);
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Picks a template from a tokenizer_config `chat_template` value (string or list of named templates). */
export function pickChatTemplate(value: unknown, where: string, name?: string): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = new Map<string, string>();
    for (const t of value)
      if (isObject(t) && typeof t.name === 'string' && typeof t.template === 'string') named.set(t.name, t.template);
      else throw fail('E_CHAT_TEMPLATE', `${where}: chat_template list entries must be {name, template} strings`, { file: where });
    const want = name ?? 'default';
    const t = named.get(want);
    if (t === undefined)
      throw fail('E_CHAT_TEMPLATE', `${where}: no chat template named '${want}'`, {
        file: where, hint: `pick one of: ${[...named.keys()].join(', ')}`,
      });
    return t;
  }
  throw fail('E_CHAT_TEMPLATE', `${where}: chat_template must be a string or a list of named templates`, { file: where });
}

/** Reads the model's chat template (see the header for the search order). */
export async function loadChatTemplate(dir: string, opts: { name?: string; tokenizerConfig?: Record<string, unknown> } = {}): Promise<string> {
  const jinja = join(dir, CHAT_TEMPLATE_FILE);
  if (await exists(jinja)) return readFile(jinja, 'utf8');
  const proc = join(dir, PROCESSOR_TEMPLATE_FILE);
  if (await exists(proc)) {
    const raw = await readJsonFile(proc, 'E_CHAT_TEMPLATE');
    if (isObject(raw) && raw.chat_template !== undefined) return pickChatTemplate(raw.chat_template, proc, opts.name);
  }
  const cfgFile = join(dir, 'tokenizer_config.json');
  const cfg = opts.tokenizerConfig ?? ((await exists(cfgFile)) ? await readJsonFile(cfgFile, 'E_CHAT_TEMPLATE') : undefined);
  if (isObject(cfg) && cfg.chat_template != null) return pickChatTemplate(cfg.chat_template, cfgFile, opts.name);
  throw fail('E_CHAT_TEMPLATE', `${dir}: the model has no chat template`, {
    file: dir, hint: `add ${CHAT_TEMPLATE_FILE}, or a chat_template to tokenizer_config.json`,
  });
}

const compiled = new Map<string, Template>();

function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw fail('E_CHAT_TEMPLATE', `chat template does not parse: ${(e as Error).message}`, {}, e);
    }
    compiled.set(source, t);
  }
  return t;
}

/** Renders a chat template; `specialTokens` are the tokenizer's strings (bos_token, eos_token, …). */
export function renderChatTemplate(
  source: string, messages: readonly ChatMessage[], specialTokens: Readonly<Record<string, string | undefined>> = {},
  opts: RenderOptions = {},
): string {
  const tokens = Object.fromEntries(Object.entries(specialTokens).filter(([, v]) => v !== undefined));
  try {
    return compile(source).render({
      messages, add_generation_prompt: opts.addGenerationPrompt ?? false, tools: null, documents: null,
      ...tokens, ...opts.extra,
    });
  } catch (e) {
    if ((e as { code?: unknown }).code === 'E_CHAT_TEMPLATE') throw e;
    throw fail('E_CHAT_TEMPLATE', `chat template failed to render: ${(e as Error).message}`, {}, e);
  }
}

function countFor(kind: MediaKind, counts: number | readonly number[], index: number, total: number): number {
  if (typeof counts !== 'number' && counts.length !== total)
    throw fail('E_PROMPT', `the prompt has ${total} ${kind} placeholder(s) but ${counts.length} ${kind} count(s) were given`, {
      hint: `give one ${kind} per placeholder in the messages`,
    });
  const n = typeof counts === 'number' ? counts : counts[index];
  if (!Number.isInteger(n) || n < 1) throw fail('E_PROMPT', `${kind} #${index}: feature row count must be a positive integer, got ${n}`);
  return n;
}

/**
 * Replaces each occurrence of a placeholder id with `count` copies. Kinds without a count and without
 * occurrences are fine; a placeholder that occurs with no count known is E_PROMPT.
 */
export function expandPlaceholders(
  ids: readonly number[], placeholders: Partial<Record<MediaKind, Placeholder>>, counts: PlaceholderCounts = {},
): { ids: number[]; spans: PlaceholderSpan[] } {
  const kinds = (Object.keys(placeholders) as MediaKind[]).filter((k) => placeholders[k] !== undefined);
  const byId = new Map(kinds.map((k) => [placeholders[k]!.tokenId, k]));
  if (byId.size !== kinds.length) throw fail('E_PROMPT', `image and audio placeholders share token id ${placeholders.image?.tokenId}`);
  const totals = new Map<MediaKind, number>();
  for (const id of ids) {
    const k = byId.get(id);
    if (k) totals.set(k, (totals.get(k) ?? 0) + 1);
  }
  const seen = new Map<MediaKind, number>();
  const out: number[] = [];
  const spans: PlaceholderSpan[] = [];
  for (const id of ids) {
    const kind = byId.get(id);
    if (!kind) { out.push(id); continue; }
    const index = seen.get(kind) ?? 0;
    seen.set(kind, index + 1);
    const given = counts[kind] ?? placeholders[kind]!.count;
    if (given === undefined)
      throw fail('E_PROMPT', `the prompt has ${kind} placeholders but the number of ${kind} feature rows is unknown`, {
        hint: `set ${kind}_seq_length in config.json or pass the count`,
      });
    const length = countFor(kind, given, index, totals.get(kind)!);
    spans.push({ kind, index, tokenId: id, start: out.length, length });
    for (let i = 0; i < length; i++) out.push(id);
  }
  return { ids: out, spans };
}

/** Placeholder ids and default counts from config.json, tokenizer_config.json and the vocab. */
export function findPlaceholders(
  modelConfig: Readonly<Record<string, unknown>>, tok: Pick<TextTokenizer, 'tokenToId' | 'config'>,
): Partial<Record<MediaKind, Placeholder>> {
  const out: Partial<Record<MediaKind, Placeholder>> = {};
  for (const kind of ['image', 'audio'] as const) {
    const fromConfig = [modelConfig[`${kind}_token_index`], modelConfig[`${kind}_token_id`]].find(Number.isInteger) as number | undefined;
    const name = typeof tok.config[`${kind}_token`] === 'string' ? (tok.config[`${kind}_token`] as string) : `<${kind}>`;
    const tokenId = fromConfig ?? tok.tokenToId(name);
    if (tokenId === undefined) continue;
    const n = modelConfig[`${kind}_seq_length`];
    out[kind] = { tokenId, count: Number.isInteger(n) && (n as number) > 0 ? (n as number) : undefined };
  }
  return out;
}

export interface PromptBuilder {
  readonly template: string;
  readonly placeholders: Partial<Record<MediaKind, Placeholder>>;
  render(messages: readonly ChatMessage[], opts?: RenderOptions): string;
  encode(messages: readonly ChatMessage[], opts?: EncodeOptions): EncodedPrompt;
}

export interface EncodeOptions extends RenderOptions {
  readonly counts?: PlaceholderCounts;
  /** Rewrites the rendered text before tokenizing (a family processor's per-image expansion). */
  readonly expandText?: (text: string) => string;
}

/** Template + tokenizer + placeholder rules of a model folder, ready to turn chats into ids. */
export async function loadPromptBuilder(
  dir: string, tok: TextTokenizer, opts: { templateName?: string; template?: string } = {},
): Promise<PromptBuilder> {
  const template = opts.template ?? (await loadChatTemplate(dir, { name: opts.templateName, tokenizerConfig: { ...tok.config } }));
  compile(template); // a broken template fails at load, not at the first chat turn
  const cfgFile = join(dir, 'config.json');
  const modelConfig = (await exists(cfgFile)) ? await readJsonFile(cfgFile, 'E_CHAT_TEMPLATE') : {};
  const placeholders = findPlaceholders(isObject(modelConfig) ? modelConfig : {}, tok);
  const render = (messages: readonly ChatMessage[], o: RenderOptions = {}) =>
    renderChatTemplate(template, messages, tok.specialTokens as Record<string, string | undefined>, o);
  return {
    template, placeholders, render,
    encode(messages, o = {}) {
      const rendered = render(messages, o);
      const text = o.expandText ? o.expandText(rendered) : rendered;
      return { text, ...expandPlaceholders(tok.encode(text, { addSpecialTokens: false }), placeholders, o.counts) };
    },
  };
}
