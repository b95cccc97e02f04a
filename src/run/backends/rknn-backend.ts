/**
 * The `rknn` backend: a brick placed on the NPU runs its converted `.rknn` artifact through the RKNN binding
 * (./rknn.ts) behind the same BrickSession contract as ORT. The artifact path and the NPU core mask come
 * from the bundle (BackendOptions.artifact / coreMask); a brick without a ready artifact cannot open here.
 *
 * The binding computes in float32 at its edges, so feeds are converted to float32 (int inputs included,
 * as the converted model takes them) and outputs are float32 with the dims the brick declares.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../../errors.js';
import type { BrickEntry } from '../../formats/bricks.js';
import { elementCount, type Backend, type BackendOptions, type BrickSession, type Feeds, type RunOptions, type TensorData, type TensorLike } from '../backend.js';
import { checkFeeds, resolveDims, tensor, toFloat32 } from '../feeds.js';
import { loadRknn, RknnModel } from './rknn.js';

export const rknnBackend: Backend = {
  id: 'rknn',
  async probe() {
    try {
      loadRknn();
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
  },
  async open(brick: BrickEntry, dir: string, opts: BackendOptions = {}): Promise<BrickSession> {
    if (!opts.artifact)
      throw fail('E_BRICK_OPEN', `brick '${brick.name}' has no converted .rknn file to run on the NPU`, { hint: 'run the bundle’s convert script with rknn-toolkit2, or compile where it is installed' });
    const file = join(dir, opts.artifact);
    const bytes = await readFile(file).catch(() => { throw fail('E_BUNDLE_MISSING_FILE', `${file}: the brick's .rknn file is missing`); });
    const model = RknnModel.open(bytes, `brick '${brick.name}' (${opts.artifact})`, { coreMask: opts.coreMask });
    if (model.inputs.length !== brick.inputs.length || model.outputs.length !== brick.outputs.length) {
      model.close();
      throw fail('E_BRICK_INTERFACE', `brick '${brick.name}': ${opts.artifact} has ${model.inputs.length} inputs / ${model.outputs.length} outputs, bricks.json declares ${brick.inputs.length} / ${brick.outputs.length}`);
    }
    return new RknnSession(brick, model);
  },
};

class RknnSession implements BrickSession {
  readonly brick: string;
  readonly inputs;
  readonly outputs;
  constructor(private readonly entry: BrickEntry, private readonly model: RknnModel) {
    this.brick = entry.name;
    this.inputs = entry.inputs;
    this.outputs = entry.outputs;
  }

  async run(feeds: Feeds, opts: RunOptions = {}): Promise<Record<string, TensorLike>> {
    const bound = checkFeeds(this.brick, this.inputs, feeds);
    const ys = this.model.run(this.inputs.map((i) => asFloat32(feeds[i.name]!, i.name)));
    const out: Record<string, TensorLike> = {};
    this.outputs.forEach((o, k) => {
      if (opts.fetch && !opts.fetch.includes(o.name) && !opts.outputs?.[o.name]) return;
      const y = ys[k]!;
      const dims = resolveDims(o.shape, bound) ?? [y.length];
      if (elementCount(dims) !== y.length)
        throw fail('E_BRICK_RUN', `brick '${this.brick}': the NPU gave ${y.length} values for '${o.name}' [${dims.join(', ')}]`);
      const pre = opts.outputs?.[o.name];
      if (pre) {
        if (pre.type !== 'float32' || pre.data.length !== y.length) throw fail('E_BRICK_RUN', `brick '${this.brick}': preallocated '${o.name}' is ${pre.type} × ${pre.data.length}, the NPU gives float32 × ${y.length}`);
        (pre.data as Float32Array).set(y);
        out[o.name] = pre;
      } else out[o.name] = tensor('float32', y, dims);
    });
    return out;
  }

  // Outputs land in NPU memory first, then are dequantized into the caller's array.
  writesInPlace(_data: TensorData): boolean { return false; }

  async close(): Promise<void> { this.model.close(); }
}

function asFloat32(t: TensorLike, name: string): Float32Array {
  if (t.type === 'float32' || t.type === 'float16') return toFloat32(t, name);
  return Float32Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}
