/**
 * LLaVA-OneVision anyres at run time: decides whether a brick set can run the tiles (it needs image_newline,
 * src/formats/image-newline.ts says where it may live), feeds the processor's base patch + tiles to the
 * vision encoder as one batch, and packs the encoder rows (./inputs/families/llava-onevision-pack.ts).
 * Without image_newline the model runs the base image alone, as transformers.js 4.3.1 does, and says so.
 */
import { join } from 'node:path';
import { fail } from '../errors.js';
import { IMAGE_NEWLINE, locateImageNewline, type ImageNewlineSource } from '../formats/image-newline.js';
import { readJsonFile } from '../formats/json-file.js';
import type { TensorLike } from './backend.js';
import type { BrickSet, EncodeResult, EncoderRole } from './brick-set.js';
import { toFloat32 } from './feeds.js';
import { packAnyresFeatures, type AnyresPackConfig } from './inputs/families/llava-onevision-pack.js';
import type { Resolution } from './inputs/families/llava-onevision.js';

export interface AnyresRuntime {
  readonly newline: ImageNewlineSource;
  readonly config: AnyresPackConfig;
  /** The processor's pixel_values [1, 1 + tiles, 3, S, S] as the encoder's batch [1 + tiles, 3, S, S]. */
  pixelBatch(pixelValues: TensorLike): TensorLike;
  /** One image's packed rows [side² + h'·(w' + 1), hidden] from its encode result and image_sizes [1, 2]. */
  pack(r: EncodeResult, imageSizes: TensorLike): Promise<Float32Array>;
}

export const ANYRES_NEEDS_NEWLINE =
  'LLaVA-OneVision: anyres tiling needs image_newline (a vision encoder output or initializer named image_newline, or a *.safetensors holding it); none found, so each image runs as its base patch alone, as transformers.js does';

/** The pack configuration from config.json (the model's, as pack_image_features reads it). */
export function anyresConfig(cfg: Record<string, unknown>, where: string): AnyresPackConfig {
  const issues: string[] = [];
  const vision = (cfg.vision_config ?? {}) as Record<string, unknown>;
  const int = (k: string, v: unknown) => { if (Number.isInteger(v) && (v as number) > 0) return v as number; issues.push(`${k}: expected a positive integer, got ${JSON.stringify(v)}`); return 1; };
  const tileSize = int('vision_config.image_size', vision.image_size);
  const patch = int('vision_config.patch_size', vision.patch_size);
  if (tileSize % patch) issues.push(`vision_config.image_size ${tileSize} is not a multiple of patch_size ${patch}`);
  const pins = cfg.image_grid_pinpoints;
  const pinpoints: Resolution[] = [];
  if (!Array.isArray(pins) || !pins.length) issues.push(`image_grid_pinpoints: expected a list of [height, width], got ${JSON.stringify(pins)}`);
  else for (const p of pins as unknown[]) {
    if (Array.isArray(p) && p.length === 2 && p.every((v) => Number.isInteger(v) && v > 0 && v % tileSize === 0)) pinpoints.push([p[0], p[1]]);
    else issues.push(`image_grid_pinpoints: ${JSON.stringify(p)} is not [height, width] in multiples of ${tileSize}`);
  }
  const n = /^anyres_max_(\d+)$/.exec(String(cfg.vision_aspect_ratio ?? 'anyres_max_9'))?.[1];
  if (!n || Number(n) < 1) issues.push(`vision_aspect_ratio: expected anyres_max_N, got ${JSON.stringify(cfg.vision_aspect_ratio)}`);
  if (issues.length) throw fail('E_CONFIG_INVALID', `${where}: ${issues.length} problem(s) with the LLaVA-OneVision anyres keys`, { file: where, notes: issues });
  return { pinpoints, tileSize, side: tileSize / patch, maxNumPatches: Number(n) };
}

/** The anyres runtime of a LLaVA-OneVision brick set, or undefined when no image_newline exists. */
export async function openAnyres(set: BrickSet, vision: EncoderRole): Promise<AnyresRuntime | undefined> {
  const last = vision.chain.at(-1)!;
  const newline = await locateImageNewline(join(set.dir, vision.chain[0]!.file), [set.dir], last.outputs.map((o) => o.name));
  if (!newline) return undefined;
  const where = join(set.dir, 'config.json');
  const config = anyresConfig(await readJsonFile(where, 'E_CONFIG_INVALID') as Record<string, unknown>, where);
  const stored = newline.from === 'output' ? undefined : await newline.read();
  return {
    newline, config,
    pixelBatch(px) {
      if (px.dims.length !== 5 || px.dims[0] !== 1) throw fail('E_PREPROCESSOR', `LLaVA-OneVision pixel_values: expected [1, patches, 3, S, S], got [${px.dims.join(', ')}]`);
      return { ...px, dims: px.dims.slice(1) } as TensorLike;
    },
    async pack(r, sizes) {
      const hw = Array.from(sizes.data as BigInt64Array, Number);
      if (hw.length !== 2) throw fail('E_PREPROCESSOR', `LLaVA-OneVision image_sizes: expected [1, 2], got [${sizes.dims.join(', ')}]`);
      const nl = stored ?? (r.outputs[IMAGE_NEWLINE] && toFloat32(r.outputs[IMAGE_NEWLINE], IMAGE_NEWLINE));
      if (!nl) throw fail('E_BRICK_RUN', `encoder '${last.name}' returned no '${IMAGE_NEWLINE}'`);
      const hidden = r.dims.at(-1)!;
      return packAnyresFeatures(r.features, hidden, [hw[0]!, hw[1]!], nl, config);
    },
  };
}
