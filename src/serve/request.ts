/**
 * The one internal request every API adapter produces (OpenAI and Ollama are two thin translations of
 * it), the limits a request is checked against, and what a finished generation reports back.
 */
import type { StopReason } from '../run/generation/chat-session.js';
import type { SamplingOptions } from '../run/generation/sampling.js';

export type Role = 'system' | 'user' | 'assistant';

export interface ServeMessage {
  readonly role: Role;
  readonly text: string;
  /** Encoded image bytes (PNG, JPEG…), decoded in memory: a request never names a file on the server. */
  readonly images: readonly Uint8Array[];
  /** WAV bytes. */
  readonly audio: readonly Uint8Array[];
}

export interface ServeRequest {
  /** The whole conversation; the last message is the user's. */
  readonly messages: readonly ServeMessage[];
  /** New tokens at most; absent: until the context is full. */
  readonly maxTokens?: number;
  /** Absent: the model's generation_config (greedy when it says nothing); temperature 0 is greedy. */
  readonly sampling?: SamplingOptions;
  readonly stop: readonly string[];
  /** llama.cpp's extension: keep generating past the end-of-sequence token (benchmarks, tests). */
  readonly ignoreEos?: boolean;
}

export interface Limits {
  /** Request body bytes (JSON with base64 media). */
  readonly maxBodyBytes: number;
  /** width × height of one decoded image. */
  readonly maxImagePixels: number;
  /** Seconds of one audio clip. */
  readonly maxAudioSeconds: number;
  /** Images + audio clips in one request (the whole conversation). */
  readonly maxMedia: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBodyBytes: 20 * 2 ** 20,
  maxImagePixels: 4096 * 4096,
  maxAudioSeconds: 60,
  maxMedia: 8,
};

/** Per-request figures, returned in every response (usage + timings) and fed to /metrics. */
export interface ServeStats {
  readonly promptTokens: number;
  /** Prompt tokens whose KV came from an earlier request (shared system prompt, previous turn). */
  readonly cachedTokens: number;
  readonly completionTokens: number;
  /** Waiting in the queue for the decoder. */
  readonly queueMs: number;
  /** Image and audio encoders. */
  readonly encodeMs: number;
  /** From the start of generation (after the queue) to the first token, encoders included. */
  readonly ttftMs: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly prefillTokPerS: number;
  readonly decodeTokPerS: number;
  /** Queue + encoders + generation. */
  readonly totalMs: number;
}

export interface ServeResult {
  readonly text: string;
  readonly stopReason: StopReason;
  readonly stats: ServeStats;
}

/** OpenAI's and Ollama's word for why an answer ended. */
export const finishReason = (r: StopReason): 'stop' | 'length' => (r === 'max-tokens' || r === 'context-full' ? 'length' : 'stop');
