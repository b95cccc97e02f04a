/**
 * How many feature rows an encoder brick hands the decoder per image / clip: what a TABM ring slot must
 * hold. In order of trust:
 *   1. the output shape, when its row dim is a number;
 *   2. shape inference on the brick with its input made concrete — from the input's own static dims, or
 *      where those are dynamic, from the processor config (image size, audio frames);
 *   3. counts the configs state (`image_seq_length`, `num_image_tokens`, `audio_seq_length`, ...; for
 *      images last of all (image_size / patch_size)², which ignores any pooling after the patches).
 * The answer carries where it came from; plan.json writes that next to the slot size.
 */
import type { GraphProto } from 'onnx-buf';
import type { BrickEntry } from '../formats/bricks.js';
import { Graph } from '../onnx/graph.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { staticEncoderInput } from '../formats/encoder-input.js';

export interface EncoderRows { readonly rows: number; readonly from: string }

type Json = Record<string, any> | undefined;
const isBatch = (d: unknown) => typeof d === 'string' && /batch/i.test(d);
const positive = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined);

/**
 * Rows per image / clip of a `[..., hidden]` feature shape at batch 1: the product of every dim but the
 * last (`[batch, 9, 128]` → 9; a flattened `[9*batch_size, 128]` → 9); undefined if any stays symbolic.
 */
export function rowsOfShape(shape: readonly unknown[] | null | undefined): number | undefined {
  if (!shape || shape.length < 2) return undefined;
  let n = 1;
  for (const d of shape.slice(0, -1)) {
    const m = typeof d === 'string' ? /^(?:(\d+)\s*\*\s*)?[A-Za-z_]*batch[A-Za-z_]*(?:\s*\*\s*(\d+))?$/i.exec(d) : null;
    const k = positive(d) ?? (m ? Number(m[1] ?? m[2] ?? 1) : undefined);
    if (k === undefined) return undefined;
    n *= k;
  }
  return n;
}

export function encoderRows(entry: BrickEntry, graph: GraphProto, configs: { config?: Json; preprocessor?: Json }): EncoderRows | undefined {
  if (entry.kind !== 'vision' && entry.kind !== 'audio' && entry.kind !== 'projector') return undefined;
  const out = entry.outputs[0];
  const declared = rowsOfShape(out?.shape);
  if (declared) return { rows: declared, from: `output '${out.name}' shape [${out.shape!.join(', ')}]` };
  const input = entry.inputs[0];
  if (!out || !input?.shape) return fromConfig(entry, configs);

  // Concrete input dims: the brick's own where static, else what the processor produces.
  const fixed = staticEncoderInput(entry, configs);
  if (fixed.shape && entry.kind !== 'projector') {
    // The declared output type keeps its symbolic dim; infer on a copy that leaves the outputs untyped.
    const g = new Graph({ ...graph, output: graph.output.map((o) => ({ ...o, type: undefined })) } as GraphProto);
    const rows = rowsOfShape(inferTypes(g, { inputShapes: { [input.name]: [...fixed.shape] } }).get(out.name)?.shape);
    if (rows) {
      const how = fixed.from ? `, dynamic dims from ${fixed.from}` : '';
      return { rows, from: `shape inference of '${out.name}' with ${input.name} [${fixed.shape.join(', ')}]${how}` };
    }
  }
  return fromConfig(entry, configs);
}

function fromConfig(entry: BrickEntry, { config: cfg, preprocessor: pre }: { config?: Json; preprocessor?: Json }): EncoderRows | undefined {
  const keys: [Json, string, string][] = entry.kind === 'audio'
    ? [[cfg, 'audio_seq_length', 'config.json'], [pre, 'num_audio_tokens', 'preprocessor_config.json']]
    : [[cfg, 'image_seq_length', 'config.json'], [pre, 'num_image_tokens', 'preprocessor_config.json'], [cfg, 'mm_tokens_per_image', 'config.json']];
  for (const [obj, key, file] of keys) {
    const v = positive(obj?.[key]);
    if (v) return { rows: v, from: `${file} ${key}` };
  }
  const v = cfg?.vision_config;
  if (entry.kind !== 'audio' && positive(v?.image_size) && positive(v?.patch_size) && v.image_size % v.patch_size === 0)
    return { rows: (v.image_size / v.patch_size) ** 2, from: `config.json vision_config (image_size ${v.image_size} / patch_size ${v.patch_size})²` };
  return undefined;
}
