/**
 * OpenAI's Chat Completions shape over the internal request: `POST /v1/chat/completions` (text,
 * `image_url` data: URLs, `input_audio` WAV; SSE streaming with a final usage chunk) and `/v1/models`.
 * Fields OpenAI accepts but this server cannot honour (tools, n > 1, logprobs, JSON modes) are refused
 * with a 400, as OpenAI refuses what a model does not support; everything else unknown is ignored.
 */
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.js';
import type { SamplingOptions } from '../run/generation/sampling.js';
import type { GenerationAdapter, HttpError } from './adapter.js';
import { bad, object, optBool, optNumber, optString, stopList } from './fields.js';
import { decodeBase64, decodeDataUrl } from './media.js';
import { finishReason, type Role, type ServeMessage, type ServeResult, type ServeStats } from './request.js';

const ROLES: Readonly<Record<string, Role>> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

function message(v: unknown, i: number): ServeMessage {
  const field = `messages[${i}]`;
  const o = object(v, field);
  const role = ROLES[o.role as string];
  if (!role) throw bad(`${field}.role`, `expected system, developer, user or assistant, got ${JSON.stringify(o.role)}`);
  const images: Uint8Array[] = [], audio: Uint8Array[] = [];
  if (typeof o.content === 'string') return { role, text: o.content, images, audio };
  if (!Array.isArray(o.content)) throw bad(`${field}.content`, 'expected a string or an array of content parts');
  const texts: string[] = [];
  for (const [j, p] of o.content.entries()) {
    const pf = `${field}.content[${j}]`;
    const part = object(p, pf);
    if (part.type === 'text') texts.push(optString(part.text, `${pf}.text`) ?? '');
    else if (part.type === 'image_url') {
      const url = object(part.image_url, `${pf}.image_url`).url;
      if (typeof url !== 'string') throw bad(`${pf}.image_url.url`, 'expected a string');
      images.push(decodeDataUrl(url, `${pf}.image_url.url`));
    } else if (part.type === 'input_audio') {
      const a = object(part.input_audio, `${pf}.input_audio`);
      if (a.format !== 'wav') throw fail('E_SERVE_UNSUPPORTED', `${pf}.input_audio.format: only 'wav' is supported, got ${JSON.stringify(a.format)}`);
      audio.push(decodeBase64(optString(a.data, `${pf}.input_audio.data`) ?? '', `${pf}.input_audio.data`));
    } else throw fail('E_SERVE_UNSUPPORTED', `${pf}.type: ${JSON.stringify(part.type)} is not supported (text, image_url, input_audio)`);
  }
  return { role, text: texts.join('\n'), images, audio };
}

const REFUSED: readonly [string, (v: unknown) => boolean][] = [
  ['tools', (v) => Array.isArray(v) && v.length > 0], ['functions', (v) => Array.isArray(v) && v.length > 0],
  ['n', (v) => v !== undefined && v !== null && v !== 1], ['logprobs', (v) => v === true],
  ['response_format', (v) => !!v && (v as { type?: string }).type !== 'text'], ['audio', (v) => !!v],
];

export function sampling(temperature?: number, topP?: number, seed?: number, topK?: number): SamplingOptions | undefined {
  if (temperature === undefined && topP === undefined && seed === undefined && topK === undefined) return undefined;
  return { temperature: temperature ?? 1, ...(topP !== undefined ? { topP } : {}), ...(seed !== undefined ? { seed: seed >>> 0 } : {}), ...(topK !== undefined ? { topK } : {}) };
}

/** llama.cpp-style timings next to `usage`, so clients can show per-answer speed. */
export const timings = (s: ServeStats) => ({
  queue_ms: s.queueMs, encode_ms: s.encodeMs, ttft_ms: s.ttftMs, prompt_n: s.promptTokens, cache_n: s.cachedTokens,
  prompt_ms: s.prefillMs, prompt_per_second: s.prefillTokPerS, predicted_n: s.completionTokens, predicted_ms: s.decodeMs,
  predicted_per_second: s.decodeTokPerS, total_ms: s.totalMs,
});

const usage = (s: ServeStats) => ({
  prompt_tokens: s.promptTokens, completion_tokens: s.completionTokens, total_tokens: s.promptTokens + s.completionTokens,
  prompt_tokens_details: { cached_tokens: s.cachedTokens },
});

export function openaiError(e: HttpError) {
  const type = e.status === 429 ? 'rate_limit_exceeded' : e.status >= 500 ? 'server_error' : 'invalid_request_error';
  const code = ({ 401: 'invalid_api_key', 404: 'model_not_found', 413: 'request_too_large', 429: 'rate_limit_exceeded' } as Record<number, string>)[e.status]
    ?? (e.code === 'E_CONTEXT_OVERFLOW' || e.code === 'E_SERVE_TOKENS' ? 'context_length_exceeded' : e.code.toLowerCase());
  return { error: { message: e.hint ? `${e.message} (${e.hint})` : e.message, type, param: null, code, nanomind_code: e.code } };
}

export function openaiChat(modelId: string): GenerationAdapter {
  const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: modelId, system_fingerprint: 'nanomind', choices, ...extra })}\n\n`;
  return {
    api: 'openai',
    streamType: 'text/event-stream; charset=utf-8',
    parse(body) {
      const o = object(body, 'body');
      if (typeof o.model !== 'string' || !o.model) throw bad('model', 'required (GET /v1/models lists it)');
      if (o.model !== modelId) throw fail('E_SERVE_MODEL', `the model '${o.model}' does not exist; this server runs '${modelId}'`);
      if (!Array.isArray(o.messages) || !o.messages.length) throw bad('messages', 'expected a non-empty array');
      for (const [k, refused] of REFUSED) if (refused(o[k])) throw fail('E_SERVE_UNSUPPORTED', `${k}: not supported by this server`);
      const maxTokens = optNumber(o.max_completion_tokens, 'max_completion_tokens', 1, 2 ** 31, true) ?? optNumber(o.max_tokens, 'max_tokens', 1, 2 ** 31, true);
      return {
        stream: optBool(o.stream, 'stream') ?? false,
        request: {
          messages: o.messages.map(message), maxTokens, stop: stopList(o.stop, 'stop', 4),
          sampling: sampling(optNumber(o.temperature, 'temperature', 0, 2), optNumber(o.top_p, 'top_p', 0, 1),
            optNumber(o.seed, 'seed', -(2 ** 53), 2 ** 53, true)),
          ignoreEos: optBool(o.ignore_eos, 'ignore_eos'),
        },
      };
    },
    whole: (r: ServeResult) => ({
      id, object: 'chat.completion', created, model: modelId, system_fingerprint: 'nanomind',
      choices: [{ index: 0, message: { role: 'assistant', content: r.text, refusal: null }, logprobs: null, finish_reason: finishReason(r.stopReason) }],
      usage: usage(r.stats), timings: timings(r.stats),
    }),
    begin: () => chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]),
    delta: (text) => chunk([{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }]),
    // The usage chunk (empty choices) always comes last, as with stream_options.include_usage.
    end: (r) => chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(r.stopReason) }])
      + chunk([], { usage: usage(r.stats), timings: timings(r.stats) }) + 'data: [DONE]\n\n',
    streamError: (e) => `data: ${JSON.stringify(openaiError(e))}\n\n`,
    error: openaiError,
  };
}

export const openaiModels = (modelId: string, created: number) => ({
  object: 'list', data: [{ id: modelId, object: 'model', created, owned_by: 'nanomind' }],
});
