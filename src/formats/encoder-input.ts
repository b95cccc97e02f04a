/**
 * Concrete values for an encoder's dynamic input dims, from the model's own configs: the image size the
 * processor resizes to (preprocessor_config.json `size` / `crop_size`, else config.json
 * `vision_config.image_size`), channels, and for audio the mel bins and frames (`feature_size`,
 * `nb_max_frames`). Batch dims are 1. The NPU runs static shapes, so these are what an NPU file is
 * specialized to; the cost model counts an encoder's FLOPs at these sizes (one call = one image / clip).
 * A dim no config fixes stays dynamic (the brick cannot go to a static-shape accelerator). Read by compile
 * (NPU files, cost model) and inspect (FLOPs per image), so both count the same image.
 */
import type { BrickEntry } from './bricks.js';

type Json = Record<string, any> | undefined;
export interface Configs { readonly config?: Json; readonly preprocessor?: Json }

export interface StaticInput {
  /** The input with every dim concrete, or undefined when some dim has no config value. */
  readonly shape?: readonly number[];
  /** Symbolic dim → the value a config gave it (batch dims not listed). */
  readonly bound: Readonly<Record<string, number>>;
  /** Which config keys those values came from, for the bundle and --explain. */
  readonly from?: string;
}

const isBatch = (d: unknown) => typeof d === 'string' && /batch/i.test(d);
const positive = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined);

/** The processor's output dims for an encoder's first input: [batch, C, H, W] images, [batch, mels, frames] audio. */
function processorDims(kind: string, { config: cfg, preprocessor: pre }: Configs): { dims: (number | undefined)[]; from: string } {
  if (kind === 'audio')
    return { dims: [1, positive(pre?.feature_size) ?? positive(cfg?.audio_config?.num_mel_bins), positive(pre?.nb_max_frames)],
      from: 'preprocessor_config.json / config.json audio frames' };
  return {
    dims: [1, positive(cfg?.vision_config?.num_channels) ?? 3,
      positive(pre?.size?.height) ?? positive(pre?.crop_size?.height) ?? positive(cfg?.vision_config?.image_size),
      positive(pre?.size?.width) ?? positive(pre?.crop_size?.width) ?? positive(cfg?.vision_config?.image_size)],
    from: 'preprocessor_config.json / config.json image size',
  };
}

/** The encoder's first input made static from its own dims where numeric, else from the configs. */
export function staticEncoderInput(entry: Pick<BrickEntry, 'kind' | 'inputs'>, configs: Configs): StaticInput {
  const input = entry.inputs[0];
  if (!input?.shape || (entry.kind !== 'vision' && entry.kind !== 'audio')) return { bound: {} };
  const p = processorDims(entry.kind, configs);
  const bound: Record<string, number> = {};
  const shape = input.shape.map((d, i) => {
    if (positive(d)) return d as number;
    if (i === 0 || isBatch(d)) return 1;
    const v = input.shape!.length === p.dims.length ? p.dims[i] : undefined;
    if (v !== undefined) bound[typeof d === 'string' ? d : `${input.name}[${i}]`] = v;
    return v;
  });
  const used = Object.keys(bound).length ? `${p.from} (${Object.entries(bound).map(([k, v]) => `${k}=${v}`).join(', ')})` : undefined;
  return shape.every((d): d is number => d !== undefined) ? { shape, bound, from: used } : { bound, from: used };
}
