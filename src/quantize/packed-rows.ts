/**
 * Encoder rows as the runtime merges them, for the quantizer's own passes (calibration, greedy eval): a
 * family that packs its encoder output before the merge (LLaVA-OneVision anyres: tiles unpadded, newline
 * rows; src/run/anyres.ts) gets the same packing here, so prompts sized for the packed rows line up.
 */
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import type { TensorLike } from '../run/backend.js';
import type { EncodeResult } from '../run/brick-set.js';
import { toFloat32 } from '../run/feeds.js';

/** The runtime's packing of one media item's encoder result (PreparedMedia.pack), by placeholder token id. */
export type Packs = Readonly<Record<number, (r: EncodeResult) => Promise<Float32Array>>>;

/**
 * Replaces `values[from]` (an encoder brick's merged output, `brick.tensor`) by its packed rows
 * [1, rows, hidden]; the packer sees every output of that brick held in `values` (image_newline).
 */
export async function packMergeSource(values: Map<string, TensorLike>, from: string, pack: Packs[number]): Promise<void> {
  const v = values.get(from);
  if (!v) return;
  const brick = from.slice(0, from.lastIndexOf('.'));
  const outputs: Record<string, TensorLike> = {};
  for (const [k, t] of values) if (k.startsWith(`${brick}.`)) outputs[k.slice(brick.length + 1)] = t;
  const hidden = v.dims.at(-1)!;
  const features = toFloat32(v, from);
  const rows = await pack({ features, dims: v.dims, rows: features.length / hidden, direct: false, ms: 0, outputs });
  values.set(from, new ort.Tensor('float32', rows, [1, rows.length / hidden, hidden]));
}
