/**
 * RKLLM: Rockchip's LLM runtime for the NPU (librkllmrt.so), bound with koffi. One `RkllmModel` is one
 * LLMHandle over a converted `.rkllm` decoder. Prompts go in as token ids (RKLLM_INPUT_TOKEN) or as merged
 * embeddings (RKLLM_INPUT_EMBED: the image/audio rows already placed among the text rows, as the ring
 * buffer hands them to the decoder); tokens stream back through the result callback.
 *
 * Layouts follow Rockchip's public rkllm.h from airockchip/rknn-llm
 * (rkllm-runtime/Linux/librkllm_api/include/rkllm.h at commit 33f17354fc1f32e387410d52704af6422024cce3,
 * the version whose RKLLMExtendParam has base_domain_id / embed_flash / enabled_cpus_num /
 * enabled_cpus_mask and whose RKLLMInput starts with input_type; later releases add fields, so a
 * librkllmrt.so from another release needs this file checked against its header). Sizes on LP64, checked
 * by test/backends/rkllm.test.ts against a C double compiled from the same declarations:
 * RKLLMExtendParam 120, RKLLMParam 208 (extend_param at 88), RKLLMInput 32 (union at 8),
 * RKLLMInferParam 32, RKLLMResult 48.
 *
 * Two ways to drive it: `runTokens`/`runEmbeds` let RKLLM generate (RKLLM_INFER_GENERATE, its own sampler);
 * `inferEmbeds` prefills rows in RKLLM_INFER_GET_LOGITS (or GET_LAST_HIDDEN_LAYER) mode and hands back the
 * last row, so nanomind's own sampler and stop rules pick the token (the `rkllm` backend, ./rkllm-backend.ts).
 * This header's rkllm_clear_kv_cache takes only keep_system_prompt (no start_pos/end_pos range, which later
 * runtimes add), so cutting the kept history back means clearing it all.
 *
 * rkllm_run blocks until generation ends and calls the callback for every token, so it runs on koffi's
 * worker thread (`.async`): the event loop stays free, each callback is marshalled to the JS thread, and
 * `abort()` can reach the runtime mid-generation. Buffers handed to rkllm_run are kept referenced
 * until it returns. No pointer leaves this module.
 */
import { existsSync } from 'node:fs';
import koffi from 'koffi';
import { loadVendorLibrary } from './vendor-lib.js';
import { fail } from '../../errors.js';

export const RKLLM_LIBRARY = 'librkllmrt.so';

const ExtendParam = koffi.struct('RKLLMExtendParam', {
  base_domain_id: 'int32_t', embed_flash: 'int8_t', enabled_cpus_num: 'int8_t', enabled_cpus_mask: 'uint32_t', reserved: koffi.array('uint8_t', 106),
});
const Param = koffi.struct('RKLLMParam', {
  model_path: 'const char *', max_context_len: 'int32_t', max_new_tokens: 'int32_t', top_k: 'int32_t', n_keep: 'int32_t',
  top_p: 'float', temperature: 'float', repeat_penalty: 'float', frequency_penalty: 'float', presence_penalty: 'float',
  mirostat: 'int32_t', mirostat_tau: 'float', mirostat_eta: 'float', skip_special_token: 'bool', is_async: 'bool',
  img_start: 'const char *', img_end: 'const char *', img_content: 'const char *', extend_param: ExtendParam,
});
// RKLLMInput: the enum, then the union (largest member RKLLMMultiModelInput: char*, float*, size_t).
const Input = koffi.struct('RKLLMInput', { input_type: 'int', data: koffi.array('uint64_t', 3) });
const InferParam = koffi.struct('RKLLMInferParam', { mode: 'int', lora_params: 'void *', prompt_cache_params: 'void *', keep_history: 'int' });
const Result = koffi.struct('RKLLMResult', {
  text: 'const char *', token_id: 'int32_t',
  last_hidden_layer: koffi.struct({ hidden_states: 'void *', embd_size: 'int', num_tokens: 'int' }),
  logits: koffi.struct({ logits: 'void *', vocab_size: 'int', num_tokens: 'int' }),
});
const Callback = koffi.proto('void LLMResultCallback(RKLLMResult *result, void *userdata, int state)');

export const RKLLM_STRUCT_SIZES = {
  RKLLMExtendParam: koffi.sizeof(ExtendParam), RKLLMParam: koffi.sizeof(Param), RKLLMInput: koffi.sizeof(Input),
  RKLLMInferParam: koffi.sizeof(InferParam), RKLLMResult: koffi.sizeof(Result),
} as const;

const INPUT = { PROMPT: 0, TOKEN: 1, EMBED: 2 } as const;
/** RKLLMInferMode. */
const MODE = { generate: 0, hidden: 1, logits: 2 } as const;
const STATE = { NORMAL: 0, WAITING: 1, FINISH: 2, ERROR: 3 } as const;

type Fn = ((...a: unknown[]) => unknown) & { async: (...a: unknown[]) => void };
interface Api { readonly path: string; readonly defaults: Fn; readonly init: Fn; readonly run: Fn; readonly abort: Fn; readonly destroy: Fn; readonly clearKv: Fn }
const apis = new Map<string, Api>();

/** Loads librkllmrt.so (or `path`); a missing or broken library is one E_NPU_LIBRARY line naming it. */
export function loadRkllm(path = process.env.NANOMIND_RKLLM_LIB ?? RKLLM_LIBRARY): Api {
  let api = apis.get(path);
  if (api) return api;
  const lib = loadVendorLibrary(path, 'the RKLLM runtime', 'install librkllmrt.so from airockchip/rknn-llm (rkllm-runtime/Linux/librkllm_api) on the board');
  const f = (decl: string) => lib.func(decl) as unknown as Fn;
  api = {
    path,
    defaults: f('RKLLMParam rkllm_createDefaultParam()'),
    init: f('int rkllm_init(_Out_ void **handle, RKLLMParam *param, LLMResultCallback *callback)'),
    run: f('int rkllm_run(void *handle, RKLLMInput *input, RKLLMInferParam *infer, void *userdata)'),
    abort: f('int rkllm_abort(void *handle)'),
    destroy: f('int rkllm_destroy(void *handle)'),
    clearKv: f('int rkllm_clear_kv_cache(void *handle, int keep_system_prompt)'),
  };
  apis.set(path, api);
  return api;
}

export interface RkllmOptions {
  readonly maxContext?: number;
  readonly maxNewTokens?: number;
  /** 1 = greedy. */
  readonly topK?: number;
  readonly temperature?: number;
  /** The plan's memory domain for the decoder (RKNN base_domain_id). */
  readonly baseDomainId?: number;
  /** CPUs the runtime's host threads may use, as a bit mask (the plan's cpu list). */
  readonly cpuMask?: number;
  readonly library?: string;
}

export interface RkllmToken { readonly text: string; readonly tokenId: number }
export interface RkllmRunOptions {
  /** Keep the KV cache after this run, so the next run continues the conversation (prefix reuse). */
  readonly keepHistory?: boolean;
  readonly onToken?: (t: RkllmToken) => void;
}
export interface RkllmRunResult { readonly tokens: readonly RkllmToken[]; readonly aborted: boolean }

/** What GET_LOGITS / GET_LAST_HIDDEN_LAYER gives for the rows of one rkllm_run. */
export interface RkllmRowsResult {
  /** The last row (logits over the vocabulary, or the last layer's hidden state), copied out of the runtime. */
  readonly last: Float32Array;
  /** Rows the runtime reported (num_tokens). */
  readonly numTokens: number;
  readonly aborted: boolean;
}

interface RunState {
  readonly mode: keyof typeof MODE;
  readonly tokens: RkllmToken[];
  readonly onToken?: (t: RkllmToken) => void;
  error?: string; finished: boolean; aborted: boolean;
  rows?: { last: Float32Array; numTokens: number };
}

/** One LLMHandle. Runs one at a time. */
export class RkllmModel {
  private handle: unknown;
  private running: Promise<unknown> | undefined;
  private current: RunState | undefined;
  private readonly callback: unknown;

  private constructor(private readonly api: Api, private readonly file: string) {
    // Registered once for the handle's life: the runtime keeps the pointer from rkllm_init.
    this.callback = koffi.register((result: unknown, _user: unknown, state: number) => this.onResult(result, state), koffi.pointer(Callback));
  }

  /** rkllm_createDefaultParam, our overrides, rkllm_init. */
  static open(file: string, opts: RkllmOptions = {}): RkllmModel {
    const api = loadRkllm(opts.library);
    if (!existsSync(file)) throw fail('E_BUNDLE_MISSING_FILE', `${file}: no such .rkllm file`);
    const p = api.defaults() as Record<string, unknown> & { extend_param: Record<string, unknown> };
    const param = {
      ...p, model_path: file,
      ...(opts.maxContext !== undefined ? { max_context_len: opts.maxContext } : {}),
      ...(opts.maxNewTokens !== undefined ? { max_new_tokens: opts.maxNewTokens } : {}),
      ...(opts.topK !== undefined ? { top_k: opts.topK } : {}),
      ...(opts.temperature !== undefined ? { temperature: opts.temperature } : {}),
      // Tokens come back with their ids; the caller's tokenizer decides what to show.
      skip_special_token: true, is_async: false,
      extend_param: {
        ...p.extend_param,
        ...(opts.baseDomainId !== undefined ? { base_domain_id: opts.baseDomainId } : {}),
        ...(opts.cpuMask !== undefined ? { enabled_cpus_mask: opts.cpuMask, enabled_cpus_num: popcount(opts.cpuMask) } : {}),
      },
    };
    const m = new RkllmModel(api, file);
    const out: unknown[] = [null];
    const rc = api.init(out, param, m.callback) as number;
    if (rc !== 0 || !out[0]) {
      koffi.unregister(m.callback as bigint);
      throw fail('E_RKLLM_RUNTIME', `${file}: rkllm_init returned ${rc}`, { hint: 'is the .rkllm converted for this chip (target_platform) and this runtime version?' });
    }
    m.handle = out[0];
    return m;
  }

  /** Prompt as token ids. */
  runTokens(ids: readonly number[], opts: RkllmRunOptions = {}): Promise<RkllmRunResult> {
    const buf = Int32Array.from(ids);
    return this.runInput(INPUT.TOKEN, buf, ids.length, 'generate', opts).then(generated);
  }

  /** Prompt as merged embedding rows ([tokens, hidden] row-major float32). */
  runEmbeds(rows: Float32Array, hidden: number, opts: RkllmRunOptions = {}): Promise<RkllmRunResult> {
    return this.runInput(INPUT.EMBED, rows, this.rowCount(rows, hidden), 'generate', opts).then(generated);
  }

  /**
   * Embedding rows in, the last row of logits (mode 'logits', RKLLM_INFER_GET_LOGITS) or of the last hidden
   * layer ('hidden') out; RKLLM samples nothing. With keepHistory the rows stay in its KV cache, so the next
   * call continues after them.
   */
  async inferEmbeds(rows: Float32Array, hidden: number, mode: 'logits' | 'hidden', opts: { readonly keepHistory?: boolean } = {}): Promise<RkllmRowsResult> {
    const state = await this.runInput(INPUT.EMBED, rows, this.rowCount(rows, hidden), mode, opts);
    if (state.aborted) return { last: new Float32Array(0), numTokens: 0, aborted: true };
    if (!state.rows) throw fail('E_RKLLM_RUNTIME', `${this.file}: rkllm_run in ${mode} mode returned no ${mode === 'logits' ? 'logits' : 'hidden states'}`,
      { hint: 'this librkllmrt.so may predate RKLLM_INFER_GET_LOGITS (runtime 1.1.x or later needed)' });
    return { last: state.rows.last, numTokens: state.rows.numTokens, aborted: false };
  }

  private rowCount(rows: Float32Array, hidden: number): number {
    if (!Number.isInteger(hidden) || hidden <= 0 || rows.length % hidden !== 0 || rows.length === 0)
      throw fail('E_BRICK_FEEDS', `${this.file}: ${rows.length} embedding values are not whole rows of ${hidden}`);
    return rows.length / hidden;
  }

  /** Stops a running generation (rkllm_abort); the pending run resolves with `aborted: true`. */
  abort(): void {
    if (!this.running || !this.current) return;
    this.current.aborted = true;
    const rc = this.api.abort(this.live()) as number;
    if (rc !== 0) throw fail('E_RKLLM_RUNTIME', `${this.file}: rkllm_abort returned ${rc}`);
  }

  /** Drops the kept history (rkllm_clear_kv_cache). */
  clearHistory(): void {
    const rc = this.api.clearKv(this.live(), 0) as number;
    if (rc !== 0) throw fail('E_RKLLM_RUNTIME', `${this.file}: rkllm_clear_kv_cache returned ${rc}`);
  }

  /** Waits for a running generation, then rkllm_destroy; safe to call twice. */
  async close(): Promise<void> {
    if (this.handle === undefined) return;
    await this.running?.catch(() => undefined);
    const h = this.handle;
    this.handle = undefined;
    const rc = this.api.destroy(h) as number;
    koffi.unregister(this.callback as bigint);
    if (rc !== 0) throw fail('E_RKLLM_RUNTIME', `${this.file}: rkllm_destroy returned ${rc}`);
  }

  private async runInput(type: number, data: Int32Array | Float32Array, nTokens: number, mode: RunState['mode'], opts: RkllmRunOptions): Promise<RunState> {
    const handle = this.live();
    if (this.running) throw fail('E_BAD_OPTION', `${this.file}: a generation is already running on this RKLLM handle`);
    const held = Buffer.from(data.buffer, data.byteOffset, data.byteLength); // referenced until rkllm_run returns
    const union = new BigUint64Array(3);
    union[0] = koffi.address(held);
    union[1] = BigInt(nTokens);
    const input = { input_type: type, data: union };
    const infer = { mode: MODE[mode], lora_params: null, prompt_cache_params: null, keep_history: opts.keepHistory ? 1 : 0 };
    const state: RunState = { mode, tokens: [], onToken: opts.onToken, finished: false, aborted: false };
    this.current = state;
    const call = new Promise<number>((resolve, reject) => this.api.run.async(handle, input, infer, null,
      (err: unknown, rc: number) => (err ? reject(err) : resolve(rc))));
    this.running = call;
    try {
      const rc = await call;
      void held;
      if (state.error) throw fail('E_RKLLM_RUNTIME', `${this.file}: the runtime reported an error during generation`, { notes: [state.error] });
      if (rc !== 0 && !state.aborted) throw fail('E_RKLLM_RUNTIME', `${this.file}: rkllm_run returned ${rc}`);
      return state;
    } finally {
      this.running = undefined;
      this.current = undefined;
    }
  }

  private onResult(result: unknown, state: number): void {
    const cur = this.current;
    if (!cur) return;
    if (state === STATE.FINISH) { cur.finished = true; return; }
    if (state === STATE.ERROR) { cur.error = 'RKLLM_RUN_ERROR'; return; }
    if (state !== STATE.NORMAL || !result) return; // WAITING: an incomplete UTF-8 character, more follows
    if (cur.mode !== 'generate') { this.takeRows(cur, result); return; }
    const r = koffi.decode(result, Result) as { text: string | null; token_id: number };
    const t = { text: r.text ?? '', tokenId: r.token_id };
    cur.tokens.push(t);
    cur.onToken?.(t);
  }

  /** Copies the last row out now: the runtime's buffer is only valid during the callback. */
  private takeRows(cur: RunState, result: unknown): void {
    type Rows = { ptr: unknown; width: number; numTokens: number };
    const r = koffi.decode(result, Result) as { last_hidden_layer: { hidden_states: unknown; embd_size: number; num_tokens: number }; logits: { logits: unknown; vocab_size: number; num_tokens: number } };
    const rows: Rows = cur.mode === 'logits'
      ? { ptr: r.logits.logits, width: r.logits.vocab_size, numTokens: r.logits.num_tokens }
      : { ptr: r.last_hidden_layer.hidden_states, width: r.last_hidden_layer.embd_size, numTokens: r.last_hidden_layer.num_tokens };
    if (!rows.ptr || rows.width <= 0 || rows.numTokens <= 0) return;
    cur.rows = { last: koffi.decode(rows.ptr, (rows.numTokens - 1) * rows.width * 4, 'float', rows.width) as Float32Array, numTokens: rows.numTokens };
  }

  private live(): unknown {
    if (this.handle === undefined) throw fail('E_BRICK_CLOSED', `${this.file}: the RKLLM handle was destroyed`);
    return this.handle;
  }
}

const generated = (s: RunState): RkllmRunResult => ({ tokens: s.tokens, aborted: s.aborted });
const popcount = (m: number): number => { let n = 0; for (let x = m >>> 0; x; x &= x - 1) n++; return n; };
