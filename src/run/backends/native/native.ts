/**
 * The native engine as a backend for a lifted decoder brick (`<brick>.native.json` + `<brick>.nmq` next to the
 * brick file, written by src/compile/native/lift.ts). inputs_embeds or input_ids in, logits of the last token
 * out; the KV cache lives inside the engine (`ownsKv`), so the caller sends no past_key_values and gets no
 * present.*: it says how many cached rows to keep through `ownsKv.truncate`, and the attention mask's length
 * tells the engine where the new rows start. Batch 1, no padding.
 */
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../../../errors.js';
import type { BrickEntry } from '../../../formats/bricks.js';
import { NATIVE_CONFIG_FILE, checkNativeConfig, type NativeConfig } from '../../../formats/native-weights.js';
import { TENSOR } from '../../../formats/names.js';
import type { Backend, BackendOptions, BrickSession, Feeds, RunOptions, TensorData, TensorLike } from '../../backend.js';
import { loadKernels, type KernelModel, type Kernels } from './addon.js';

export const nativeConfigFile = (brick: string): string => `${brick}.${NATIVE_CONFIG_FILE}`;

/** `maxContext`: rows of the preallocated KV cache (default 4096). */
export type NativeOptions = BackendOptions;

export const nativeBackend: Backend = {
  id: 'native',
  async probe() {
    const k = loadKernels();
    return k.ok ? { ok: true } : { ok: false, reason: k.reason };
  },
  open: (brick, dir, opts) => openNative(brick, dir, opts),
};

export async function openNative(brick: BrickEntry, dir: string, opts: NativeOptions = {}): Promise<NativeSession> {
  const k = loadKernels();
  if (!k.ok) throw fail('E_BACKEND_UNAVAILABLE', `native kernels: ${k.reason}`);
  const cfgFile = join(dir, nativeConfigFile(brick.name));
  let raw: unknown;
  try { raw = JSON.parse(await readFile(cfgFile, 'utf8')); } catch (e) {
    throw fail('E_NATIVE_CONFIG', `brick '${brick.name}' has no readable ${nativeConfigFile(brick.name)}: ${(e as Error).message}`,
      { file: cfgFile, hint: 'compile with --engine native, or run this brick on ort-cpu' });
  }
  const cfg = checkNativeConfig(raw, cfgFile);
  const wfile = join(dir, (raw as { weightsFile?: string }).weightsFile ?? `${brick.name}.nmq`);
  // The engine reads the file into its own memory (no JS-side copy: peak RSS holds the weights once).
  const size = await stat(wfile).then((st) => st.size, () => -1);
  if (size !== cfg.bytes) throw fail('E_NATIVE_CONFIG', `${wfile} holds ${size < 0 ? 'no readable' : size} bytes, ${cfgFile} says ${cfg.bytes}`, { file: wfile });
  const threads = opts.threads && opts.threads > 0 ? opts.threads : 2;
  const maxContext = opts.maxContext ?? 4096;
  let model: KernelModel;
  try {
    model = k.kernels.create({
      hidden: cfg.hidden, layers: cfg.layers, heads: cfg.heads, kvHeads: cfg.kvHeads, headDim: cfg.headDim, intermediate: cfg.intermediate,
      vocab: cfg.vocab, maxContext, threads, bits: cfg.bits, qkNorm: cfg.qkNorm ? 1 : 0, attnBias: cfg.attnBias ? 1 : 0, rmsEps: cfg.rmsEps,
    }, { path: wfile, bytes: cfg.bytes }, Float64Array.from(cfg.offsets), Float32Array.from(cfg.invFreq));
  } catch (e) {
    throw fail('E_NATIVE_CONFIG', `brick '${brick.name}': the engine refused ${cfgFile}: ${(e as Error).message}`, { file: cfgFile });
  }
  const embed = cfg.takes === 'input_ids' ? await readEmbedding(wfile, cfg) : undefined;
  return new NativeSession(k.kernels, model, brick, cfg, maxContext, embed);
}

/** The float32 embedding table stored in the weights file (only that range is read). */
async function readEmbedding(file: string, cfg: NativeConfig): Promise<Float32Array> {
  const out = new Float32Array(cfg.vocab * cfg.hidden);
  const fh = await open(file, 'r');
  try {
    const { bytesRead } = await fh.read(new Uint8Array(out.buffer), 0, out.byteLength, cfg.embedOffset);
    if (bytesRead !== out.byteLength) throw fail('E_NATIVE_CONFIG', `${file}: the embedding table at ${cfg.embedOffset} is cut short`, { file });
  } finally {
    await fh.close();
  }
  return out;
}

export class NativeSession implements BrickSession {
  readonly brick: string;
  readonly inputs;
  readonly outputs;
  /** Rows the engine's KV cache holds; the caller cuts it back, the engine appends. */
  private rows = 0;
  private closed = false;
  readonly ownsKv = {
    truncate: (n: number): void => { this.rows = Math.min(this.rows, n); },
    length: (): number => this.rows,
  };

  constructor(private readonly k: Kernels, private model: KernelModel | undefined, entry: BrickEntry, readonly config: NativeConfig,
    readonly maxContext: number, private readonly embedTable: Float32Array | undefined) {
    this.brick = entry.name;
    // past/present are the engine's own: the interface the caller sees has neither.
    this.inputs = entry.inputs.filter((i) => !i.name.startsWith('past_key_values.'));
    this.outputs = entry.outputs.filter((o) => !o.name.startsWith('present.'));
  }

  async run(feeds: Feeds, opts: RunOptions = {}): Promise<Record<string, TensorLike>> {
    return { [TENSOR.logits]: this.forward(feeds, opts, false) };
  }

  /** As `run`, with the logits of every new row ([1, S, vocab]); for oracle tests and scoring. */
  runAll(feeds: Feeds): TensorLike {
    return this.forward(feeds, {}, true);
  }

  private forward(feeds: Feeds, opts: RunOptions, all: boolean): TensorLike {
    if (this.closed || !this.model) throw fail('E_BRICK_CLOSED', `brick '${this.brick}' was closed`);
    const c = this.config;
    const past = Object.keys(feeds).filter((n) => n.startsWith('past_key_values.'));
    if (past.length) throw fail('E_BAD_INPUT', `brick '${this.brick}' keeps its KV cache inside the native engine; do not feed ${past[0]}`);
    let embeds: Float32Array, S: number;
    const ids = feeds[TENSOR.inputIds], e = feeds[TENSOR.inputsEmbeds];
    if (e) {
      if (e.type !== 'float32') throw fail('E_BAD_INPUT', `brick '${this.brick}': inputs_embeds must be float32 for the native engine, got ${e.type}`);
      S = e.dims[1] ?? 0;
      embeds = e.data as Float32Array;
    } else if (ids && this.embedTable) {
      S = ids.dims[1] ?? 0;
      embeds = new Float32Array(S * c.hidden);
      for (let t = 0; t < S; t++) {
        const id = Number((ids.data as BigInt64Array)[t]);
        if (!(id >= 0 && id < c.vocab)) throw fail('E_BAD_INPUT', `brick '${this.brick}': input_ids[${t}] = ${id} is not a token id (vocabulary: ${c.vocab})`);
        embeds.set(this.embedTable.subarray(id * c.hidden, (id + 1) * c.hidden), t * c.hidden);
      }
    } else throw fail('E_BAD_INPUT', `brick '${this.brick}' needs ${c.takes}`);
    if (S < 1 || embeds.length !== S * c.hidden) throw fail('E_BAD_INPUT', `brick '${this.brick}': ${embeds.length} embedding values for ${S} rows of ${c.hidden}`);
    const mask = feeds[TENSOR.attentionMask];
    const total = mask ? mask.dims[1]! : this.rows + S;
    if (mask && Array.prototype.some.call(mask.data, (v: bigint | number) => Number(v) !== 1))
      throw fail('E_BAD_INPUT', `brick '${this.brick}': the native engine takes no padding (attention_mask must be all ones)`, { hint: 'batch 1 needs no padding' });
    const pos0 = total - S;
    if (pos0 > this.rows) throw fail('E_NATIVE_KV', `brick '${this.brick}': the step starts at row ${pos0} but the engine's cache holds ${this.rows} rows`);
    if (total > this.maxContext) throw fail('E_CONTEXT_OVERFLOW', `brick '${this.brick}': ${total} tokens do not fit the ${this.maxContext}-row KV cache`);
    const pos = feeds[TENSOR.positionIds];
    if (pos) for (let t = 0; t < S; t++) if (Number((pos.data as BigInt64Array)[t]) !== pos0 + t)
      throw fail('E_BAD_INPUT', `brick '${this.brick}': position_ids must run ${pos0}…${pos0 + S - 1} for the native engine`);
    const rowsOut = all ? S : 1;
    const pre = opts.outputs?.[TENSOR.logits];
    const logits = pre && pre.type === 'float32' && pre.data.length === rowsOut * c.vocab ? pre.data as Float32Array : new Float32Array(rowsOut * c.vocab);
    this.k.forward(this.model, embeds, S, pos0, logits, all);
    this.rows = total;
    return pre && pre.data === logits ? pre : { type: 'float32', data: logits, dims: [1, rowsOut, c.vocab] };
  }

  writesInPlace(data: TensorData): boolean { return data instanceof Float32Array; }

  async close(): Promise<void> {
    this.closed = true;
    this.model = undefined; // the external's finalizer frees the engine
  }
}
