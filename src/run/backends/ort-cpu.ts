/**
 * ONNX Runtime, CPU execution provider (onnxruntime-node). One InferenceSession per brick, graph
 * optimizations on, a configurable intra-op thread count.
 *
 * Preallocated outputs use ORT's fetches (`session.run(feeds, {name: tensor})`): the binding wraps the
 * caller's typed array as the output OrtValue, so ORT writes the result straight into that memory.
 * The node binding then still copies every output into a fresh ArrayBuffer for its return value; that
 * copy is thrown away here and the caller's own tensor is returned, so downstream code reads the
 * caller's memory. (Only a binding change could skip that copy.)
 *
 * onnxruntime-node rejects typed arrays over a SharedArrayBuffer ("Invalid argument"), so memory shared
 * with worker threads (a `shared` TABM ring) costs one copy: such inputs are copied into plain memory,
 * and such preallocated outputs are computed into ORT's memory and copied into the caller's.
 *
 * The module is imported lazily so that a board whose onnxruntime-node binary fails to load can still
 * probe and use other backends.
 */
import '../../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import { join } from 'node:path';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { fail } from '../../errors.js';
import type { BrickEntry } from '../../formats/bricks.js';
import type { Backend, BackendOptions, BrickSession, Feeds, RunOptions, TensorData, TensorLike } from '../backend.js';
import { checkFeeds } from '../feeds.js';
import { ORT_LOG } from '../../onnx/ort-log.js';

type Ort = typeof import('onnxruntime-node');

let loading: Promise<Ort> | undefined;
/** onnxruntime-node, imported once (ort-webgpu shares it). */
export const loadOrt = (): Promise<Ort> =>
  (loading ??= import('onnxruntime-node').then((m) => ((m as { default?: Ort }).default ?? m) as Ort).catch((e) => { loading = undefined; throw e; }));

export const ortCpu: Backend = {
  id: 'ort-cpu',

  async probe() {
    try {
      const ort = await loadOrt();
      if (!ort.listSupportedBackends().some((b) => b.name === 'cpu'))
        return { ok: false, reason: 'this onnxruntime-node build has no CPU execution provider' };
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: `onnxruntime-node does not load: ${(e as Error).message}` };
    }
  },

  open: (brick, dir, opts) => openOrtBrick('cpu', brick, dir, opts),
};

/**
 * Opens a brick on one ORT execution provider ('cpu' or 'webgpu'); the session is the same class for both.
 * `describeOpenError` lets a provider turn ORT's open failure into its own clearer error.
 */
export async function openOrtBrick(ep: 'cpu' | 'webgpu', brick: BrickEntry, dir: string, opts: BackendOptions = {},
  describeOpenError?: (e: Error, file: string) => Error): Promise<BrickSession> {
  {
    if (opts.threads !== undefined && !(Number.isSafeInteger(opts.threads) && opts.threads >= 0))
      throw fail('E_BAD_OPTION', `threads must be an integer ≥ 0 (0 = ORT's default), got ${opts.threads}`);
    const ort = await loadOrt();
    const file = join(dir, brick.file);
    let session: InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, {
        ...ORT_LOG,
        executionProviders: [ep],
        graphOptimizationLevel: 'all',
        executionMode: 'sequential',
        // Bricks run one after another; parallelism lives inside each op.
        interOpNumThreads: 1,
        ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
        ...(opts.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
      });
    } catch (e) {
      if (describeOpenError) throw describeOpenError(e as Error, file);
      throw fail('E_BRICK_OPEN', `brick '${brick.name}': ONNX Runtime cannot load ${brick.file}: ${(e as Error).message}`, { file }, e);
    }
    const missing = brick.inputs.filter((i) => !session.inputNames.includes(i.name)).map((i) => i.name);
    if (missing.length || session.inputNames.length !== brick.inputs.length) {
      await session.release();
      throw fail('E_BRICK_INTERFACE', `brick '${brick.name}': ${brick.file} has inputs [${session.inputNames.join(', ')}] but bricks.json declares [${brick.inputs.map((i) => i.name).join(', ')}]`,
        { file, hint: 'the brick file and bricks.json disagree; partition again' });
    }
    return new OrtBrickSession(ort, brick, session);
  }
}

class OrtBrickSession implements BrickSession {
  readonly brick: string;
  readonly inputs;
  readonly outputs;
  private closed = false;

  constructor(private readonly ort: Ort, entry: BrickEntry, private readonly session: InferenceSession) {
    this.brick = entry.name;
    this.inputs = entry.inputs;
    this.outputs = entry.outputs;
  }

  async run(feeds: Feeds, opts: RunOptions = {}): Promise<Record<string, TensorLike>> {
    if (this.closed) throw fail('E_BRICK_CLOSED', `brick '${this.brick}' was closed`);
    checkFeeds(this.brick, this.inputs, feeds);
    const pre = opts.outputs ?? {};
    const names = this.session.outputNames;
    for (const n of Object.keys(pre))
      if (!names.includes(n)) throw fail('E_BAD_OPTION', `brick '${this.brick}' has no output '${n}' to preallocate (outputs: ${names.join(', ')})`);
    const wanted = opts.fetch ? names.filter((n) => opts.fetch!.includes(n) || n in pre) : names;
    const fetches: Record<string, Tensor | null> = {};
    for (const n of wanted) fetches[n] = pre[n] && this.writesInPlace(pre[n]!.data) ? this.asOrt(pre[n]!) : null;
    const ortFeeds: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = this.asOrt(isShared(v.data) ? { ...v, data: v.data.slice() } : v);
    let out: InferenceSession.ReturnType;
    try {
      out = await this.session.run(ortFeeds, fetches);
    } catch (e) {
      throw fail('E_BRICK_RUN', `brick '${this.brick}': ONNX Runtime failed: ${(e as Error).message}`, undefined, e);
    }
    const result: Record<string, TensorLike> = {};
    for (const n of wanted) {
      const p = pre[n];
      if (p && !fetches[n]) copyInto(p, out[n] as unknown as TensorLike, this.brick, n);
      result[n] = p ?? (out[n] as unknown as TensorLike);
    }
    return result;
  }

  writesInPlace(data: TensorData): boolean {
    return !isShared(data);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.session.release();
  }

  // Wrapping is free: an ort.Tensor over a typed array keeps that array (and its byteOffset).
  private asOrt(t: TensorLike): Tensor {
    if (t instanceof this.ort.Tensor) return t;
    return new this.ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
  }
}

const isShared = (data: TensorData): boolean =>
  typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer;

function copyInto(dst: TensorLike, src: TensorLike | undefined, brick: string, name: string): void {
  if (!src || src.type !== dst.type || src.data.length !== dst.data.length)
    throw fail('E_BRICK_RUN', `brick '${brick}': output '${name}' is ${src ? `${src.type} [${src.dims.join(', ')}]` : 'missing'}, `
      + `the preallocated tensor is ${dst.type} [${dst.dims.join(', ')}]`);
  (dst.data as Float32Array).set(src.data as Float32Array);
}
