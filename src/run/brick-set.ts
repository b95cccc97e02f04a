/**
 * A brick set opened for running: the manifest, the role of each brick (encoders with the placeholder
 * token their features replace, the embed brick, the decoder and its KV-cache layout), the model facts
 * generation needs (hidden size, eos ids, context length) and one backend session per brick, opened on
 * first use so a text-only chat never loads the vision encoder.
 *
 * Everything is read from bricks.json and the decoder's declared interface; config.json and
 * generation_config.json (when the manifest lists them) fill in what the interface cannot say.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { isReplaceRows, readBricksManifest, type BrickEntry, type KvCacheMode, type BricksManifest, type TensorSpec } from '../formats/bricks.js';
import { readJsonFile } from '../formats/json-file.js';
import { TENSOR, type BrickKind } from '../formats/names.js';
import { elementCount, type Backend, type BackendId, type BackendOptions, type BrickSession, type Feeds, type RunOptions, type TensorLike } from './backend.js';
import { BACKENDS, resolveBackend, DEFAULT_BACKENDS, type SkippedBackend } from './backends/index.js';
import { nativeConfigFile } from './backends/native/native.js';
import { withPinnedThread } from './affinity.js';
import { checkFeeds, isTensorLike, resolveDims, tensor, toFloat32 } from './feeds.js';
import { decoderInputs, type DecoderInputs } from './generation/decoder-inputs.js';
import { findSeq2SeqRole, type Seq2SeqRole } from './seq2seq-role.js';

/** Which engine runs a decoder that has a native pack (`<brick>.native.json`). */
export type RuntimeEngine = 'auto' | 'native' | 'ort';

export interface OpenBrickSetOptions extends BackendOptions {
  /** Verify every file's sha256 against bricks.json (default true). */
  readonly checkHashes?: boolean;
  /** Backends to try, in order (default ['ort-cpu']). */
  readonly backends?: readonly string[];
  /** Per brick name, the backends to try for that brick instead of `backends` (a bundle's placement). */
  readonly placement?: Readonly<Record<string, BrickPlacement>>;
  /**
   * The decoder's engine when the lift wrote native weights next to it (`<brick>.native.json`): 'auto' (default)
   * tries the native kernels first and keeps ONNX Runtime when they do not load (the skip reason is the notice),
   * 'native' requires them (E_NATIVE_MISSING without a pack, E_BACKEND_UNAVAILABLE when the kernels do not load),
   * 'ort' ignores the native files. Applies to a bundle's placed decoder too (its placement lists 'native' first).
   */
  readonly engine?: RuntimeEngine;
}

export interface BrickPlacement {
  readonly backends: readonly string[];
  /** The converted file an NPU backend opens, and the plan's NPU core mask. */
  readonly artifact?: string;
  readonly coreMask?: string;
  /** The context the artifact was converted for (an .rkllm decoder's max_context). */
  readonly maxContext?: number;
  /** CPUs the brick's threads are created on (plan.json affinity, those this machine has); absent: not pinned. */
  readonly cpus?: readonly number[];
}

export interface EncoderRole {
  /** Kind of the first brick of the chain: 'vision' or 'audio'. */
  readonly kind: BrickKind;
  /** The bricks that turn the raw input into feature rows, in run order (e.g. vision → projector). */
  readonly chain: readonly BrickEntry[];
  readonly input: TensorSpec;
  /** Output of the last chain brick that the merge reads. */
  readonly output: TensorSpec;
  readonly placeholderTokenId: number;
}

export interface KvLayout {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: string;
  readonly past: readonly { readonly key: string; readonly value: string }[];
  readonly present: readonly { readonly key: string; readonly value: string }[];
  /** bricks.json's `kvCache`: whether one buffer per pair may serve as past and present (generation/kv-cache.ts). */
  readonly mode: KvCacheMode;
}

export interface DecoderRole {
  readonly brick: BrickEntry;
  /** What the decoder reads: merged embeddings, or token ids directly (a text-only decoder). */
  readonly takes: 'inputs_embeds' | 'input_ids';
  /** Every input convention the decoder declares (see generation/decoder-inputs.ts). */
  readonly inputs: DecoderInputs;
  /** Absent: the decoder has no KV cache and sees the whole sequence every step. */
  readonly kv?: KvLayout;
  readonly vocab?: number;
}

export interface EncodeResult {
  /** Feature rows, [rows, hidden] row-major; `into` itself (or its prefix) when one was given. */
  readonly features: Float32Array;
  readonly dims: readonly number[];
  readonly rows: number;
  /** True when the encoder wrote straight into `into` (no copy). */
  readonly direct: boolean;
  readonly ms: number;
  /** Every output of the chain's last brick (a family may need more than the features: image_newline). */
  readonly outputs: Readonly<Record<string, TensorLike>>;
}

export interface BrickSet {
  readonly dir: string;
  readonly manifest: BricksManifest;
  /** The default backend (bricks without a placement of their own). */
  readonly backend: Backend;
  readonly skippedBackends: readonly SkippedBackend[];
  /** The backend each brick runs on, and the placed backends skipped for it (with reasons). */
  readonly placed: Readonly<Record<string, { readonly backend: BackendId; readonly skipped: readonly SkippedBackend[] }>>;
  readonly decoder: DecoderRole;
  readonly embed?: BrickEntry;
  readonly encoders: readonly EncoderRole[];
  /** Width of an embedding row; undefined only for a text-only decoder without config.json. */
  readonly hidden?: number;
  readonly eosTokenIds: readonly number[];
  readonly maxPositions?: number;
  /** Present for an encoder-decoder set (Whisper): the encoder runs once, the decoder cross-attends to it. */
  readonly seq2seq?: Seq2SeqRole;
  /** The placeholder → encoder merge for a token id, or for a kind ('vision' / 'audio'). */
  encoder(which: number | BrickKind): EncoderRole;
  session(name: string): Promise<BrickSession>;
  /** Runs a brick (opening it if needed) and adds the wall time to `brickMs()`. */
  run(name: string, feeds: Feeds, opts?: RunOptions): Promise<Record<string, TensorLike>>;
  /** Runs an encoder chain; with `into`, the last brick writes its features straight into that memory. */
  encode(which: number | BrickKind, input: TensorLike | Feeds, opts?: { into?: Float32Array }): Promise<EncodeResult>;
  /** Cumulative wall milliseconds per brick since opening. */
  brickMs(): Record<string, number>;
  /**
   * Closes one brick's session so its memory is returned (the power policy's cascade); the next
   * `session(name)` opens it again, with `next.threads` intra-op threads when given.
   */
  release(name: string, next?: { threads?: number }): Promise<void>;
  /** Bricks whose sessions are open (or opening) now. */
  openBricks(): string[];
  /** Per brick opened so far: the CPUs its threads were created on (null: not pinned, ORT's threads go anywhere). */
  brickCpus(): Record<string, number[] | null>;
  close(): Promise<void>;
}

/** Backend id per brick (every brick of the set), for stats. */
export const brickBackends = (set: BrickSet): Record<string, BackendId> =>
  Object.fromEntries(Object.entries(set.placed).map(([k, v]) => [k, v.backend]));

export async function openBrickSet(dir: string, opts: OpenBrickSetOptions = {}): Promise<BrickSet> {
  const manifest = await readBricksManifest(dir, { checkHashes: opts.checkHashes ?? true });
  const { backend, skipped } = await resolveBackend(opts.backends ?? DEFAULT_BACKENDS);
  const placed: Record<string, { backend: BackendId; skipped: readonly SkippedBackend[] }> = {};
  const backendOf = new Map<string, Backend>();
  const engine = opts.engine ?? 'auto';
  for (const b of manifest.bricks) {
    const own = opts.placement?.[b.name];
    const packed = b.kind === 'decoder' && existsSync(join(dir, nativeConfigFile(b.name)));
    if (engine === 'native' && b.kind === 'decoder' && !packed)
      throw fail('E_NATIVE_MISSING', `--engine native: decoder '${b.name}' has no native pack (${join(dir, nativeConfigFile(b.name))})`,
        { file: join(dir, nativeConfigFile(b.name)), hint: 'compile the brick set with --engine native (or auto), or run with --engine ort' });
    // A decoder's backends per engine: the native kernels only; ORT only (the placement without 'native'); or as
    // compiled (a bundle lists native first when it packed one; a bare packed brick set: native, then the default).
    const list = b.kind !== 'decoder' ? own?.backends
      : engine === 'native' ? ['native']
        : engine === 'ort' ? own?.backends.filter((id) => id !== 'native')
          : own ? own.backends : packed ? ['native', backend.id] : undefined;
    const r = !list ? { backend, skipped: [] } : engine === 'native' && b.kind === 'decoder' ? await requireNative(b.name) : await resolveBackend(list);
    placed[b.name] = { backend: r.backend.id, skipped: r.skipped };
    backendOf.set(b.name, r.backend);
  }
  // ORT's intra-op threads spin for a while after every call; beside the native engine's own pool (the decoder)
  // they hold the cores it is about to use: the embed brick runs before every decode step, an encoder before the
  // prefill. Measured on the embedded model's host bundle (Q8 pack; bench --stream-images 0 --prompt-tokens 32
  // --new-tokens 16, 5 runs, 3 interleaved pairs, 2 quiet EPYC cores): decode 2.7–3.1 k tok/s spinning, 5.7–6.9 k
  // not; prefill 34–38 k vs 54–56 k; TTFT unchanged. With every brick on ORT spinning stays (the same bundle on
  // --engine ort: decode 1.59–1.63 k spinning vs 1.45–1.46 k not).
  const spinning = !Object.values(placed).some((p) => p.backend === 'native');
  const config = await readConfigs(dir, manifest);
  const seq2seq = findSeq2SeqRole(manifest, config);
  const roles = seq2seq ? seq2seqRoles(seq2seq) : findRoles(manifest, config);
  const sessions = new Map<string, Promise<BrickSession>>();
  const threadsOf = new Map<string, number>();
  const cpusOf = new Map<string, number[] | null>();
  const ms: Record<string, number> = {};
  const entry = (name: string): BrickEntry => {
    const b = manifest.bricks.find((x) => x.name === name);
    if (!b) throw fail('E_BRICKS_ROLE', `no brick '${name}' in ${join(dir, 'bricks.json')}`);
    return b;
  };

  const set: BrickSet = {
    dir, manifest, backend, skippedBackends: skipped, placed, ...roles, seq2seq,
    encoder(which) {
      const e = roles.encoders.find((x) => (typeof which === 'number' ? x.placeholderTokenId === which : x.kind === which));
      if (!e) throw fail('E_BRICKS_ROLE', `this brick set has no ${typeof which === 'number' ? `encoder for placeholder token ${which}` : `'${which}' encoder`}`,
        { notes: roles.encoders.map((x) => `${x.kind}: ${x.chain.map((b) => b.name).join(' → ')} (token ${x.placeholderTokenId})`) });
      return e;
    },
    session(name) {
      let s = sessions.get(name);
      if (!s) {
        const own = opts.placement?.[name];
        const open = () => (backendOf.get(name) ?? backend).open(entry(name), dir, { threads: threadsOf.get(name) ?? opts.threads, artifact: own?.artifact, coreMask: own?.coreMask, maxContext: own?.maxContext, spinning });
        // Opened in turn with any pinned open of this process, pinned itself when the plan places it on CPUs.
        s = withPinnedThread(own?.cpus?.length ? own.cpus : undefined, open).then((r) => { cpusOf.set(name, r.cpus); return r.value; });
        s.catch(() => sessions.delete(name));
        sessions.set(name, s);
      }
      return s;
    },
    async run(name, feeds, runOpts) {
      const s = await set.session(name);
      const t0 = performance.now();
      try {
        return await s.run(feeds, runOpts);
      } finally {
        ms[name] = (ms[name] ?? 0) + performance.now() - t0;
      }
    },
    async encode(which, input, encOpts = {}) {
      const e = set.encoder(which);
      const t0 = performance.now();
      let feeds: Feeds = isTensorLike(input) ? { [e.input.name]: input } : input;
      let out: Record<string, TensorLike> = {};
      let direct = false, written = false;
      for (const [i, b] of e.chain.entries()) {
        const last = i === e.chain.length - 1;
        const into = last ? encOpts.into : undefined;
        let pre: Record<string, TensorLike> | undefined;
        if (into) {
          const dims = resolveDims(e.output.shape, checkFeeds(b.name, b.inputs, feeds));
          if (dims && e.output.dtype === 'float32') {
            const n = elementCount(dims);
            if (into.length < n)
              throw fail('E_BUFFER_SIZE', `encoder '${b.name}' writes ${n} values ([${dims.join(', ')}]) but the buffer holds ${into.length}`,
                { hint: 'size the TABM slot with slotBytesFor({tokens, hidden, dtype}) for this encoder' });
            pre = { [e.output.name]: tensor('float32', into.subarray(0, n), dims) };
            direct = (await set.session(b.name)).writesInPlace(into);
            written = true;
          }
        }
        out = await set.run(b.name, feeds, pre ? { outputs: pre } : {});
        if (!last) feeds = nextFeeds(manifest, b, e.chain[i + 1]!, out);
      }
      const t = out[e.output.name];
      if (!t) throw fail('E_BRICK_RUN', `encoder '${e.chain.at(-1)!.name}' returned no '${e.output.name}'`);
      let features = toFloat32(t, e.output.name);
      if (written) features = encOpts.into!.subarray(0, features.length);
      else if (encOpts.into) {
        if (encOpts.into.length < features.length)
          throw fail('E_BUFFER_SIZE', `encoder features need ${features.length} values but the buffer holds ${encOpts.into.length}`);
        encOpts.into.set(features);
        features = encOpts.into.subarray(0, features.length);
      }
      const rows = roles.hidden ? features.length / roles.hidden : t.dims.length > 1 ? elementCount(t.dims.slice(0, -1)) : 1;
      return { features, dims: t.dims, rows, direct, ms: performance.now() - t0, outputs: out };
    },
    brickMs: () => ({ ...ms }),
    async release(name, next) {
      entry(name);
      if (next?.threads !== undefined) threadsOf.set(name, next.threads);
      const s = sessions.get(name);
      sessions.delete(name);
      await (await s?.catch(() => undefined))?.close();
    },
    openBricks: () => [...sessions.keys()],
    brickCpus: () => Object.fromEntries(cpusOf),
    async close() {
      const all = [...sessions.values()];
      sessions.clear();
      await Promise.all(all.map(async (s) => (await s.catch(() => undefined))?.close()));
    },
  };
  return set;
}


/** `--engine native`: the native backend, or E_BACKEND_UNAVAILABLE saying why and what to do instead (no fallback). */
async function requireNative(brick: string) {
  const k = await BACKENDS.native.probe();
  if (!k.ok) throw fail('E_BACKEND_UNAVAILABLE', `--engine native: the native kernels do not run here, so decoder '${brick}' cannot use them (${k.reason})`,
    { hint: 'run with --engine auto (ONNX Runtime when the kernels do not load) or --engine ort, or build them: node kernels/build.mjs' });
  return resolveBackend(['native']);
}

/** Feeds of `to` from the outputs of `from`, following the manifest's connections between them. */
function nextFeeds(m: BricksManifest, from: BrickEntry, to: BrickEntry, out: Record<string, TensorLike>): Feeds {
  const feeds: Record<string, TensorLike> = {};
  for (const c of m.connections) {
    const [fb, ft] = split(c.from);
    const [tb, tt] = split(c.to);
    if (fb === from.name && tb === to.name && out[ft]) feeds[tt] = out[ft]!;
  }
  return feeds;
}

const split = (endpoint: string): [string, string] => {
  const dot = endpoint.indexOf('.');
  return [endpoint.slice(0, dot), endpoint.slice(dot + 1)];
};

// ---------------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;
interface Configs { readonly config?: Json; readonly generation?: Json }

async function readConfigs(dir: string, m: BricksManifest): Promise<Configs> {
  const read = async (name: string) =>
    m.files.some((f) => f.path === name) ? (await readJsonFile(join(dir, name), 'E_CONFIG_INVALID')) as Json : undefined;
  return { config: await read('config.json'), generation: await read('generation_config.json') };
}

type Roles = Pick<BrickSet, 'decoder' | 'embed' | 'encoders' | 'hidden' | 'eosTokenIds' | 'maxPositions'>;

function findRoles(m: BricksManifest, c: Configs): Roles {
  const decoders = m.bricks.filter((b) => b.kind === 'decoder');
  if (decoders.length !== 1)
    throw fail('E_BRICKS_ROLE', `a brick set needs exactly one decoder brick, found ${decoders.length}`,
      { notes: m.bricks.map((b) => `${b.name}: ${b.kind}`) });
  const dec = decoders[0]!;
  const text = { ...c.config, ...(c.config?.text_config as Json | undefined) };
  const num = (...v: unknown[]): number | undefined => v.find((x): x is number => typeof x === 'number');
  const lastDim = (s: TensorSpec | undefined) => (s?.shape && typeof s.shape.at(-1) === 'number' ? s.shape.at(-1) as number : undefined);

  const inputs = decoderInputs(dec, typeof c.config?.model_type === 'string' ? c.config.model_type : undefined);
  const embedsIn = dec.inputs.find((i) => i.name === TENSOR.inputsEmbeds);
  const embeds = m.bricks.filter((b) => b.kind === 'embed');
  const embed = embedsIn ? embeds[0] : undefined;
  if (embedsIn && !embed) throw fail('E_BRICKS_ROLE', `decoder '${dec.name}' takes inputs_embeds but the brick set has no embed brick`);
  if (embed && !embed.inputs.some((i) => i.name === TENSOR.inputIds))
    throw fail('E_BRICKS_ROLE', `embed brick '${embed.name}' has no input_ids input`);
  const hidden = lastDim(embedsIn) ?? lastDim(embed?.outputs[0]) ?? num(text.hidden_size);
  if (embedsIn && !hidden) throw fail('E_BRICKS_ROLE', `cannot tell the hidden size: inputs_embeds has no fixed last dim and config.json has no hidden_size`);

  const decoder: DecoderRole = {
    brick: dec, takes: inputs.takes, inputs, kv: kvLayout(dec, text),
    vocab: lastDim(dec.outputs.find((o) => o.name === TENSOR.logits)) ?? num(text.vocab_size),
  };
  if (!dec.outputs.some((o) => o.name === TENSOR.logits)) throw fail('E_BRICKS_ROLE', `decoder '${dec.name}' has no 'logits' output`);
  if (embed && (embed.inputs.length !== 1 || embed.outputs.length < 1))
    throw fail('E_BRICKS_ROLE', `embed brick '${embed.name}' should take only input_ids and give the embeddings`);

  const encoders: EncoderRole[] = [];
  for (const conn of m.connections) {
    if (!isReplaceRows(conn)) continue;
    const [tail, out] = split(conn.from);
    const chain = [m.bricks.find((b) => b.name === tail)!];
    // Walk back through plain connections (projector ← vision) to the brick that takes the raw input.
    for (;;) {
      const head = chain[0]!;
      const prev = m.connections.find((x) => !x.merge && split(x.to)[0] === head.name && split(x.from)[0] !== head.name);
      const b = prev && m.bricks.find((x) => x.name === split(prev.from)[0]);
      if (!b || chain.includes(b)) break;
      chain.unshift(b);
    }
    const output = chain.at(-1)!.outputs.find((o) => o.name === out)!;
    if (chain[0]!.inputs.length === 0) throw fail('E_BRICKS_ROLE', `encoder brick '${chain[0]!.name}' has no inputs`);
    encoders.push({ kind: chain[0]!.kind, chain, input: chain[0]!.inputs[0]!, output, placeholderTokenId: conn.merge.placeholderTokenId });
  }

  const eos = c.generation?.eos_token_id ?? c.config?.eos_token_id ?? text.eos_token_id;
  const eosTokenIds = (Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos]).filter((x): x is number => Number.isInteger(x));
  return { decoder, embed, encoders, hidden, eosTokenIds, maxPositions: num(text.max_position_embeddings) };
}

/** The decoder-only roles an encoder-decoder set also answers (its generation is ./generation/seq2seq.ts). */
function seq2seqRoles(r: Seq2SeqRole): Roles {
  const logits = r.decoder.outputs.find((o) => o.name === TENSOR.logits)?.shape?.at(-1);
  return {
    decoder: {
      brick: r.decoder, takes: 'input_ids', vocab: typeof logits === 'number' ? logits : undefined,
      // Fed by generation/seq2seq.ts (encoder_hidden_states, use_cache_branch), not by stepFeeds.
      inputs: { takes: 'input_ids', embedsType: 'float32', attentionMask: false, positions: 'none', positionStart: 0,
        cachePosition: false, useCacheBranch: true, numLogitsToKeep: false, tokenTypeIds: false },
    },
    encoders: [], eosTokenIds: r.decoding.eosTokenIds, maxPositions: r.decoding.maxPositions,
  };
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(key|value)$/;

/** The KV-cache layout from the decoder's past inputs [batch, kv_heads, past_len, head_dim]. */
function kvLayout(dec: BrickEntry, text: Json): KvLayout | undefined {
  const past = dec.inputs.filter((i) => PAST.test(i.name));
  if (past.length === 0) return undefined;
  const layers = Math.max(...past.map((p) => Number(PAST.exec(p.name)![1]))) + 1;
  const names = { past: [] as { key: string; value: string }[], present: [] as { key: string; value: string }[] };
  const issues: string[] = [];
  for (let i = 0; i < layers; i++) {
    const pair = (re: RegExp, list: readonly TensorSpec[]) => {
      const find = (kv: string) => list.find((t) => { const x = re.exec(t.name); return x && Number(x[1]) === i && x[2] === kv; })?.name;
      const key = find('key'), value = find('value');
      if (!key || !value) issues.push(`layer ${i}: missing ${re === PAST ? 'past_key_values' : 'present'}.${i}.${key ? 'value' : 'key'}`);
      return { key: key ?? '', value: value ?? '' };
    };
    names.past.push(pair(PAST, dec.inputs));
    names.present.push(pair(PRESENT, dec.outputs));
  }
  if (issues.length) throw fail('E_BRICKS_ROLE', `decoder '${dec.name}': incomplete KV-cache interface: ${issues[0]}`, { notes: issues });
  const shape = past[0]!.shape;
  const dim = (i: number) => (shape && shape.length === 4 && typeof shape[i] === 'number' ? shape[i] as number : undefined);
  const heads = typeof text.num_attention_heads === 'number' ? text.num_attention_heads : undefined;
  const kvHeads = dim(1) ?? (typeof text.num_key_value_heads === 'number' ? text.num_key_value_heads : heads);
  const headDim = dim(3) ?? (typeof text.head_dim === 'number' ? text.head_dim
    : typeof text.hidden_size === 'number' && heads ? text.hidden_size / heads : undefined);
  if (!kvHeads || !headDim || !Number.isInteger(headDim))
    throw fail('E_BRICKS_ROLE', `decoder '${dec.name}': cannot tell KV heads / head dim from ${past[0]!.name} [${shape?.join(', ')}] or config.json`);
  return { layers, kvHeads, headDim, dtype: past[0]!.dtype, ...names, mode: dec.kvCache ?? 'concat' };
}
