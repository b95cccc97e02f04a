/**
 * Ollama's API shape over the internal request: `/api/chat` and `/api/generate` (images as base64,
 * NDJSON streaming, which is Ollama's default), `/api/tags`, `/api/show`, `/api/version`. Durations are
 * nanoseconds, as Ollama reports them. `format` (JSON modes) and `tools` are refused; other options
 * Ollama knows but this runtime does not use (num_ctx, keep_alive, …) are ignored.
 */
import { fail } from '../errors.js';
import type { RuntimeModel } from '../run/model.js';
import type { GenerationAdapter, HttpError } from './adapter.js';
import { bad, object, optBool, optNumber, optString, stopList } from './fields.js';
import { decodeBase64 } from './media.js';
import { sampling } from './openai.js';
import { finishReason, type Role, type ServeMessage, type ServeRequest, type ServeResult } from './request.js';

const ns = (ms: number) => Math.round(ms * 1e6);

function images(v: unknown, field: string): Uint8Array[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(field, 'expected an array of base64 strings');
  return v.map((x, i) => decodeBase64(optString(x, `${field}[${i}]`) ?? '', `${field}[${i}]`));
}

function options(body: Record<string, unknown>): Pick<ServeRequest, 'maxTokens' | 'sampling' | 'stop'> {
  const o = body.options === undefined || body.options === null ? {} : object(body.options, 'options');
  const n = optNumber(o.num_predict, 'options.num_predict', -2, 2 ** 31, true);
  return {
    maxTokens: n === undefined || n < 0 ? undefined : n === 0 ? 1 : n,
    sampling: sampling(optNumber(o.temperature, 'options.temperature', 0, 100), optNumber(o.top_p, 'options.top_p', 0, 1),
      optNumber(o.seed, 'options.seed', -(2 ** 53), 2 ** 53, true), optNumber(o.top_k, 'options.top_k', 0, 2 ** 31, true)),
    stop: stopList(o.stop, 'options.stop', 16),
  };
}

function checkCommon(o: Record<string, unknown>, modelId: string): void {
  if (typeof o.model !== 'string' || !o.model) throw bad('model', 'required (GET /api/tags lists it)');
  if (!sameModel(o.model, modelId)) throw fail('E_SERVE_MODEL', `model '${o.model}' not found; this server runs '${modelId}'`);
  if (o.format !== undefined && o.format !== null && o.format !== '') throw fail('E_SERVE_UNSUPPORTED', 'format: JSON output is not supported by this server');
  if (Array.isArray(o.tools) && o.tools.length) throw fail('E_SERVE_UNSUPPORTED', 'tools: not supported by this server');
}

/** Ollama names carry a tag (`name:latest`); either spelling names the one model. */
const sameModel = (asked: string, id: string) => asked === id || asked === `${id}:latest`;

export const ollamaError = (e: HttpError) => ({ error: e.hint ? `${e.message} (${e.hint})` : e.message, code: e.code });

function adapter(modelId: string, parse: (o: Record<string, unknown>) => { request: ServeRequest; noop?: boolean },
  piece: (text: string) => Record<string, unknown>): GenerationAdapter {
  const head = () => ({ model: modelId, created_at: new Date().toISOString() });
  const final = (r: ServeResult, text: string) => ({
    ...head(), ...piece(text), done: true, done_reason: finishReason(r.stopReason),
    total_duration: ns(r.stats.totalMs), load_duration: 0, prompt_eval_count: r.stats.promptTokens,
    prompt_eval_duration: ns(r.stats.encodeMs + r.stats.prefillMs), eval_count: r.stats.completionTokens, eval_duration: ns(r.stats.decodeMs),
    // nanomind's own figures (Ollama clients ignore unknown keys).
    prompt_cached_count: r.stats.cachedTokens, queue_duration: ns(r.stats.queueMs),
  });
  return {
    api: 'ollama',
    streamType: 'application/x-ndjson',
    parse(body) {
      const o = object(body, 'body');
      checkCommon(o, modelId);
      return { ...parse(o), stream: optBool(o.stream, 'stream') ?? true };
    },
    whole: (r) => final(r, r.text),
    begin: () => '',
    delta: (text) => JSON.stringify({ ...head(), ...piece(text), done: false }) + '\n',
    end: (r) => JSON.stringify(final(r, '')) + '\n',
    streamError: (e) => JSON.stringify(ollamaError(e)) + '\n',
    error: ollamaError,
  };
}

const ROLES: Readonly<Record<string, Role>> = { system: 'system', user: 'user', assistant: 'assistant' };

export const ollamaChat = (modelId: string) => adapter(modelId, (o) => {
  if (!Array.isArray(o.messages)) throw bad('messages', 'expected an array');
  const messages: ServeMessage[] = o.messages.map((v, i) => {
    const m = object(v, `messages[${i}]`);
    const role = ROLES[m.role as string];
    if (!role) throw bad(`messages[${i}].role`, `expected system, user or assistant, got ${JSON.stringify(m.role)}`);
    return { role, text: optString(m.content, `messages[${i}].content`) ?? '', images: images(m.images, `messages[${i}].images`), audio: [] };
  });
  // Ollama answers an empty message list by loading the model and returning at once.
  return { request: { messages, ...options(o) }, noop: messages.length === 0 };
}, (text) => ({ message: { role: 'assistant', content: text } }));

export const ollamaGenerate = (modelId: string) => adapter(modelId, (o) => {
  if (o.raw === true) throw fail('E_SERVE_UNSUPPORTED', 'raw: prompts without the chat template are not supported by this server');
  const prompt = optString(o.prompt, 'prompt') ?? '';
  const imgs = images(o.images, 'images');
  const system = optString(o.system, 'system');
  const messages: ServeMessage[] = [
    ...(system ? [{ role: 'system' as const, text: system, images: [], audio: [] }] : []),
    { role: 'user', text: prompt, images: imgs, audio: [] },
  ];
  return { request: { messages, ...options(o) }, noop: !prompt && !imgs.length };
}, (text) => ({ response: text }));

/** `/api/tags` and `/api/show` describe the one model. */
export function ollamaModel(modelId: string, m: RuntimeModel, modifiedAt: string) {
  const bricks = m.set.manifest.bricks;
  const params = bricks.reduce((n, b) => n + b.params, 0);
  const size = bricks.reduce((n, b) => n + b.bytes, 0);
  const kinds = m.set.encoders.map((e) => e.kind);
  const formats = [...new Set(bricks.map((b) => b.format ?? 'fp32'))];
  const details = {
    parent_model: '', format: 'onnx', family: m.set.decoder.brick.name,
    families: ['decoder', ...kinds], parameter_size: `${(params / 1e6).toFixed(1)}M`, quantization_level: formats.join('+'),
  };
  return {
    tag: { name: `${modelId}:latest`, model: `${modelId}:latest`, modified_at: modifiedAt, size, digest: '', details },
    show: {
      modelfile: '', parameters: '', template: '', details, modified_at: modifiedAt,
      model_info: { 'general.architecture': 'nanomind', 'general.basename': modelId },
      capabilities: ['completion', ...(kinds.includes('vision') ? ['vision'] : []), ...(kinds.includes('audio') ? ['audio'] : [])],
    },
  };
}
