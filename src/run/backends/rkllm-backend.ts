/**
 * The `rkllm` backend: a decoder brick placed on the NPU runs its converted `.rkllm` file through the RKLLM
 * binding (./rkllm.ts), as a decoder that keeps its own KV cache (`ownsKv`, as the native engine does).
 * inputs_embeds in (the merged rows: text embeddings with the image/audio rows already over their
 * placeholders), the last row of logits out, by rkllm_run in RKLLM_INFER_GET_LOGITS mode with
 * keep_history = 1: RKLLM never samples, so nanomind's sampler, stop rules, streaming and prefix reuse stay
 * the same for every backend. No past_key_values go in and no present.* come out.
 *
 * RKLLM numbers positions itself (from the rows in its KV cache), so the step must start where the cache
 * ends: the attention mask's length says where the new rows end, and position_ids, when fed, must be the
 * plain text positions (mRoPE decoders cannot run here).
 *
 * RunOptions.signal reaches rkllm_abort, so a long prefill on the NPU stops mid-run (then E_ABORTED).
 *
 * Cutting the cache back (`truncate`, prefix reuse): the pinned rkllm.h has no range clear
 * (rkllm_clear_kv_cache takes only keep_system_prompt), so the session keeps a float32 copy of every row it
 * fed, clears the whole cache, and sends the kept rows again in front of the next step's rows, in the same
 * rkllm_run. That costs one prefill of the kept prefix, on the NPU, only when a conversation diverges from
 * what is cached (an edited turn, a re-tokenized answer); a plain follow-up turn truncates nothing.
 */
import { join } from 'node:path';
import { fail } from '../../errors.js';
import type { BrickEntry } from '../../formats/bricks.js';
import { TENSOR } from '../../formats/names.js';
import type { Backend, BackendOptions, BrickSession, Feeds, RunOptions, TensorData, TensorLike } from '../backend.js';
import { toFloat32 } from '../feeds.js';
import { loadRkllm, RkllmModel } from './rkllm.js';

export const rkllmBackend: Backend = {
  id: 'rkllm',
  async probe() {
    try {
      loadRkllm();
      return { ok: true };
    } catch (e) {
      // The code travels with the reason: the fallback notice is the one line a user sees about it.
      return { ok: false, reason: `${(e as { code?: string }).code ?? 'E_NPU_LIBRARY'}: ${(e as Error).message}` };
    }
  },
  async open(brick: BrickEntry, dir: string, opts: BackendOptions = {}): Promise<BrickSession> {
    if (brick.kind !== 'decoder') throw fail('E_BRICK_OPEN', `brick '${brick.name}' is a ${brick.kind} brick; RKLLM runs decoders only`);
    if (!opts.artifact)
      throw fail('E_BRICK_OPEN', `brick '${brick.name}' has no converted .rkllm file to run on the NPU`, { hint: 'run the bundle’s convert_rkllm script with rkllm-toolkit and place the .rkllm file in the bundle' });
    const embeds = brick.inputs.find((i) => i.name === TENSOR.inputsEmbeds);
    const hidden = embeds?.shape?.at(-1);
    if (typeof hidden !== 'number')
      throw fail('E_BRICK_INTERFACE', `brick '${brick.name}': RKLLM takes merged embeddings, but the brick declares no inputs_embeds with a fixed hidden size`);
    // The plan's NPU core mask is not passed: RKLLM picks its NPU cores itself (the .rkllm file is
    // converted for a core count), and its extend_param takes CPUs, not NPU cores.
    const model = RkllmModel.open(join(dir, opts.artifact), opts.maxContext ? { maxContext: opts.maxContext } : {});
    return new RkllmSession(brick, model, hidden);
  },
};

export class RkllmSession implements BrickSession {
  readonly brick: string;
  readonly inputs;
  readonly outputs;
  /** Every row fed so far (row-major [rows, hidden]), so a truncation can send the kept prefix again. */
  private fed: Float32Array;
  /** Rows the caller may count on as cached. */
  private rows = 0;
  /** Of those, rows RKLLM no longer holds (after a clear) and that go in front of the next step. */
  private replay = 0;
  private closed = false;
  readonly ownsKv = {
    truncate: (n: number): void => {
      if (n >= this.rows) return;
      this.live();
      if (this.replay === 0) this.model.clearHistory();
      this.rows = Math.max(0, n);
      this.replay = this.rows;
    },
    length: (): number => this.rows,
    resident: (): number => this.rows - this.replay,
  };

  constructor(entry: BrickEntry, private readonly model: RkllmModel, readonly hidden: number) {
    this.brick = entry.name;
    // past/present live inside RKLLM: the interface the caller sees has neither.
    this.inputs = entry.inputs.filter((i) => !i.name.startsWith('past_key_values.'));
    this.outputs = entry.outputs.filter((o) => !o.name.startsWith('present.'));
    this.fed = new Float32Array(64 * hidden);
  }

  async run(feeds: Feeds, opts: RunOptions = {}): Promise<Record<string, TensorLike>> {
    this.live();
    const H = this.hidden;
    const past = Object.keys(feeds).find((n) => n.startsWith('past_key_values.'));
    if (past) throw fail('E_BAD_INPUT', `brick '${this.brick}' keeps its KV cache inside RKLLM; do not feed ${past}`);
    const e = feeds[TENSOR.inputsEmbeds];
    if (!e) throw fail('E_BAD_INPUT', `brick '${this.brick}' runs on RKLLM, which needs ${TENSOR.inputsEmbeds}`);
    const rows = e.type === 'float32' ? e.data as Float32Array : toFloat32(e, TENSOR.inputsEmbeds);
    const S = e.dims[1] ?? 0;
    if (S < 1 || rows.length !== S * H) throw fail('E_BAD_INPUT', `brick '${this.brick}': ${rows.length} embedding values for ${S} rows of ${H}`);
    const mask = feeds[TENSOR.attentionMask];
    if (mask && Array.prototype.some.call(mask.data, (v: bigint | number) => Number(v) !== 1))
      throw fail('E_BAD_INPUT', `brick '${this.brick}': RKLLM takes no padding (attention_mask must be all ones)`, { hint: 'batch 1 needs no padding' });
    const total = mask ? mask.dims[1]! : this.rows + S;
    const pos0 = total - S;
    if (pos0 !== this.rows)
      throw fail('E_RKLLM_KV', `brick '${this.brick}': the step starts at row ${pos0} but RKLLM's cache holds ${this.rows} rows`, { hint: 'cut the cache back with ownsKv.truncate first' });
    const pos = feeds[TENSOR.positionIds];
    if (pos && (pos.data.length !== S || Array.prototype.some.call(pos.data, (v: bigint | number, t: number) => Number(v) !== pos0 + t)))
      throw fail('E_BAD_INPUT', `brick '${this.brick}': RKLLM numbers positions itself; position_ids must run ${pos0}…${pos0 + S - 1}`,
        { hint: 'mRoPE decoders (Qwen2-VL) cannot run on RKLLM through nanomind yet' });

    this.keep(pos0, rows);
    const send = this.replay ? this.fed.subarray(0, (pos0 + S) * H) : rows;
    if (opts.signal?.aborted) throw fail('E_ABORTED', `brick '${this.brick}': aborted before the RKLLM step`);
    const stop = () => this.model.abort();
    opts.signal?.addEventListener('abort', stop, { once: true });
    let r;
    try {
      r = await this.model.inferEmbeds(send, H, 'logits', { keepHistory: true });
      if (r.aborted) throw fail('E_ABORTED', `brick '${this.brick}': the RKLLM step was aborted (rkllm_abort)`);
    } catch (err) {
      // What RKLLM kept of a failed or aborted step is unknown: start its cache over from the rows we hold.
      this.model.clearHistory();
      this.rows = this.replay = pos0;
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', stop);
    }
    this.replay = 0;
    this.rows = total;
    const V = r.last.length;
    const pre = opts.outputs?.[TENSOR.logits];
    if (pre) {
      if (pre.type !== 'float32' || pre.data.length !== V) throw fail('E_BRICK_RUN', `brick '${this.brick}': preallocated logits are ${pre.type} × ${pre.data.length}, RKLLM gives float32 × ${V}`);
      (pre.data as Float32Array).set(r.last);
      return { [TENSOR.logits]: pre };
    }
    return { [TENSOR.logits]: { type: 'float32', data: r.last, dims: [1, 1, V] } };
  }

  /** Logits are copied out of RKLLM's buffer in its callback, never written in place. */
  writesInPlace(_data: TensorData): boolean { return false; }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.model.close();
  }

  private keep(pos0: number, rows: Float32Array): void {
    const need = (pos0 + rows.length / this.hidden) * this.hidden;
    if (need > this.fed.length) {
      const grown = new Float32Array(Math.max(need, this.fed.length * 2));
      grown.set(this.fed.subarray(0, pos0 * this.hidden));
      this.fed = grown;
    }
    this.fed.set(rows, pos0 * this.hidden);
  }

  private live(): void {
    if (this.closed) throw fail('E_BRICK_CLOSED', `brick '${this.brick}' was closed`);
  }
}
