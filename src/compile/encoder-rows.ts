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

  const audio = entry.kind === 'audio';
  const pre = configs.preprocessor, cfg = configs.config;
  // Concrete input dims: the brick's own where static, else what the processor produces.
  const fromProcessor: (number | undefined)[] = audio
    ? [1, positive(pre?.feature_size) ?? positive(cfg?.audio_config?.num_mel_bins), positive(pre?.nb_max_frames)]
    : [1, positive(cfg?.vision_config?.num_channels) ?? 3, positive(pre?.size?.height) ?? positive(pre?.crop_size?.height) ?? positive(cfg?.vision_config?.image_size),
      positive(pre?.size?.width) ?? positive(pre?.crop_size?.width) ?? positive(cfg?.vision_config?.image_size)];
  const usedConfig: string[] = [];
  const concrete = input.shape.map((d, i) => {
    if (positive(d)) return d as number;
    if (i === 0 || isBatch(d)) return 1;
    if (input.shape!.length === fromProcessor.length && fromProcessor[i] !== undefined) { usedConfig.push(`${d ?? '?'}=${fromProcessor[i]}`); return fromProcessor[i]!; }
    return undefined;
  });
  if (concrete.every((d) => d !== undefined) && entry.kind !== 'projector') {
    // The declared output type keeps its symbolic dim; infer on a copy that leaves the outputs untyped.
    const g = new Graph({ ...graph, output: graph.output.map((o) => ({ ...o, type: undefined })) } as GraphProto);
    const rows = rowsOfShape(inferTypes(g, { inputShapes: { [input.name]: concrete as number[] } }).get(out.name)?.shape);
    if (rows) {
      const how = usedConfig.length ? `, dynamic dims from ${audio ? 'preprocessor_config.json / config.json audio frames' : 'preprocessor_config.json / config.json image size'} (${usedConfig.join(', ')})` : '';
      return { rows, from: `shape inference of '${out.name}' with ${input.name} [${concrete.join(', ')}]${how}` };
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
