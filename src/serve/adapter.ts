/**
 * What an API shape (OpenAI, Ollama) gives the HTTP layer for a generation endpoint: a parser into the
 * internal request, and the framing of a whole answer, a stream, and an error. The HTTP layer runs the
 * same flow for every shape; an adapter only translates.
 */
import { isNanomindError, type NanomindError } from '../errors.js';
import type { ServeRequest, ServeResult } from './request.js';

export interface Parsed {
  readonly request: ServeRequest;
  readonly stream: boolean;
  /** Answer without generating (Ollama's empty-prompt "load" call). */
  readonly noop?: boolean;
}

export interface GenerationAdapter {
  readonly api: 'openai' | 'ollama';
  parse(body: unknown): Parsed;
  whole(r: ServeResult): unknown;
  readonly streamType: string;
  /** Stream framing: the text before any token, one delta, the end (with usage), and an error mid-stream. */
  begin(): string;
  delta(text: string): string;
  end(r: ServeResult): string;
  streamError(e: HttpError): string;
  /** The body of an error response. */
  error(e: HttpError): unknown;
}

/** An error on its way to a client: HTTP status, stable code, one-line message. */
export interface HttpError {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly hint?: string;
}

const STATUS: Readonly<Record<string, number>> = {
  E_SERVE_BAD_REQUEST: 400, E_SERVE_BAD_JSON: 400, E_SERVE_UNSUPPORTED: 400, E_SERVE_TOKENS: 400, E_CONTEXT_OVERFLOW: 400,
  E_IMAGE: 400, E_AUDIO: 400, E_PROMPT_IMAGES: 400,
  E_SERVE_AUTH: 401, E_SERVE_NOT_FOUND: 404, E_SERVE_MODEL: 404,
  E_SERVE_TOO_LARGE: 413, E_SERVE_QUEUE_FULL: 429, E_SERVE_CANCELLED: 499, E_SERVE_STOPPING: 503,
};

/** Any thrown value → what the client sees; an unexpected error is a 500 without internals. */
export function httpError(e: unknown): HttpError {
  if (isNanomindError(e)) {
    const n = e as NanomindError;
    return { status: STATUS[n.code] ?? 500, code: n.code, message: n.message, hint: n.detail.hint };
  }
  return { status: 500, code: 'E_INTERNAL', message: 'internal error while generating' };
}
