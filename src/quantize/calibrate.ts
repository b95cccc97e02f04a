/**
 * Activation statistics of a float brick under ONNX Runtime: the tensors of interest are added as extra
 * graph outputs of a temporary copy of the model (the proto only; its external data files are hard
 * linked, copied only across filesystems), which runs one sample at a time, every output folded into bounded accumulators
 * (./stats.ts) and dropped. Histogram methods take a second pass over the range the first pass found.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { copyFile, link, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { GraphProtoSchema, ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { makeValueInfo } from '../onnx/builder.js';
import { Graph } from '../onnx/graph.js';
import { allTensors, externalRef, resolveInside, type OnnxFile } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import type { TensorLike } from '../run/backend.js';
import { toFloat32 } from '../run/feeds.js';
import { sessionOptions, type Feeds } from './samples.js';
import { ChannelStats, RangeStats } from './stats.js';

export interface StatsRequest {
  /** Tensors whose value range is needed (QDQ activations). */
  readonly ranges?: readonly string[];
  /** Tensors whose per-channel statistics and sampled rows are needed (AWQ inputs). */
  readonly channels?: readonly string[];
  readonly histograms?: boolean;
  /** Rows kept per channel tensor (default 128). */
  readonly rows?: number;
  readonly seed?: number;
}

export interface BrickStats {
  readonly ranges: ReadonlyMap<string, RangeStats>;
  readonly channels: ReadonlyMap<string, ChannelStats>;
}

/**
 * A session over `src` that also returns `extra` values; the temporary model lives in a scratch dir
 * beside the output (removed by `close`).
 */
export async function openWithOutputs(src: OnnxFile, extra: readonly string[], scratchRoot: string, threads?: number):
  Promise<{ session: ort.InferenceSession; close: () => Promise<void> }> {
  const g = src.model.graph!;
  const outs = new Set(g.output.map((o) => o.name));
  const inputs = new Set(g.input.map((i) => i.name));
  const add = extra.filter((v) => !outs.has(v) && !inputs.has(v));
  const types = add.length ? inferTypes(new Graph(g)) : new Map();
  const model: ModelProto = create(ModelProtoSchema, {
    ...src.model,
    graph: create(GraphProtoSchema, { ...g, output: [...g.output, ...add.map((v) => makeValueInfo(v, types.get(v)?.dtype ?? 'float32'))] }),
  });
  await mkdir(scratchRoot, { recursive: true });
  const dir = await mkdtemp(join(scratchRoot, 'calib-'));
  try {
    const locations = new Set([...allTensors(g)].map(externalRef).filter((r) => r).map((r) => r!.location));
    for (const loc of locations) {
      const from = resolveInside(src.dir, loc, src.file), to = resolveInside(dir, loc, 'calibration copy');
      // ONNX Runtime resolves symlinks and refuses data outside the model's directory: hard-link
      // (free on one filesystem), else copy.
      await link(from, to).catch(() => copyFile(from, to));
    }
    const file = join(dir, 'model.onnx');
    await writeFile(file, toBinary(ModelProtoSchema, model));
    const session = await ort.InferenceSession.create(file, sessionOptions(threads));
    return { session, close: async () => { await session.release(); await rm(dir, { recursive: true, force: true }); } };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** A float16 activation (an fp16 export's) widened: its raw half bits are not values. */
const floats = (t: ort.Tensor, name: string): Float32Array => toFloat32(t as unknown as TensorLike, name);

export async function collectStats(src: OnnxFile, samples: readonly Feeds[], req: StatsRequest, scratch: string, threads?: number): Promise<BrickStats> {
  const ranges = new Map((req.ranges ?? []).map((v) => [v, new RangeStats()]));
  const channels = new Map((req.channels ?? []).map((v, i) => [v, new ChannelStats(req.rows ?? 128, (req.seed ?? 0) + i)]));
  const wanted = [...new Set([...ranges.keys(), ...channels.keys()])];
  if (!wanted.length) return { ranges, channels };
  const { session, close } = await openWithOutputs(src, wanted, scratch, threads);
  const fetch = wanted.filter((v) => session.outputNames.includes(v));
  const valueOf = async (feeds: Feeds): Promise<Record<string, ort.Tensor>> => ({ ...feeds, ...(fetch.length ? await session.run(feeds, fetch) : {}) });
  try {
    for (const feeds of samples) {
      const out = await valueOf(feeds);
      for (const [v, st] of ranges) if (out[v]) st.observe(floats(out[v], v));
      for (const [v, st] of channels) if (out[v]) st.observe(floats(out[v], v), out[v].dims[out[v].dims.length - 1]);
    }
    if (req.histograms && ranges.size)
      for (const feeds of samples) {
        const out = await valueOf(feeds);
        for (const [v, st] of ranges) if (out[v]) st.histogram(floats(out[v], v));
      }
  } finally {
    await close();
  }
  return { ranges, channels };
}
