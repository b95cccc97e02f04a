/**
 * Picks a model folder's image processor family and exposes one API for all of them:
 *
 *   const p = await loadFamilyProcessor(dir);            // undefined: no family names itself (use image.ts)
 *   const batch = await p.preprocess([fileA, fileB]);     // images of one prompt, in prompt order
 *   batch.tensors       // model inputs: pixel_values + the family's extras (image_grid_thw, image_sizes,
 *                       // pixel_attention_mask, rows / cols)
 *   batch.tokensPerImage  // placeholder tokens (feature rows) each image becomes
 *   batch.expandPrompt(text)  // each image placeholder in the text → its family-specific expansion
 *   p.notices           // preprocessor_config.json keys nothing reads (print them; they do not change output)
 *
 * The family is chosen by preprocessor_config.json `image_processor_type`, else config.json `model_type`.
 * Keys a family does not honour that would change its output are refused (E_PREPROCESSOR_UNSUPPORTED).
 */
import { join } from 'node:path';
import { access } from 'node:fs/promises';
import { fail } from '../../../errors.js';
import { readJsonFile } from '../../../formats/json-file.js';
import { decodeImage } from '../image.js';
import type { Image8 } from '../pil-resize.js';
import { checkKeys } from './keys.js';
import { gemma3Family } from './gemma3.js';
import { idefics3Family } from './idefics3.js';
import { llavaOnevisionFamily } from './llava-onevision.js';
import { qwen2VlFamily } from './qwen2-vl.js';
import type { FamilyConfigs, FamilyImageProcessor, ImageFamily, ProcessedImage, ProcessOptions, TensorLike } from './types.js';

export type { TensorLike, ProcessOptions } from './types.js';

export const IMAGE_FAMILIES: readonly ImageFamily[] = [qwen2VlFamily, idefics3Family, llavaOnevisionFamily, gemma3Family];

export interface ImageBatch {
  readonly tensors: Readonly<Record<string, TensorLike>>;
  readonly tokensPerImage: readonly number[];
  /** Replaces the i-th image placeholder with image i's expansion; a count mismatch is E_PROMPT_IMAGES. */
  expandPrompt(text: string): string;
}

export interface FamilyProcessor {
  readonly family: string;
  readonly placeholder: string;
  readonly notices: readonly string[];
  preprocess(inputs: readonly (string | Uint8Array | Image8)[], opts?: ProcessOptions): Promise<ImageBatch>;
  /** See FamilyImageProcessor.ropeIndex; `images` are single-image batches' tensors, in prompt order. */
  readonly ropeIndex?: FamilyImageProcessor['ropeIndex'];
}

/** The family a set of configs names, or undefined. */
export function findFamily(preprocessor: Readonly<Record<string, unknown>>, model: Readonly<Record<string, unknown>>): ImageFamily | undefined {
  const type = preprocessor.image_processor_type;
  if (typeof type === 'string') return IMAGE_FAMILIES.find((f) => f.imageProcessorTypes.includes(type));
  const mt = model.model_type;
  return typeof mt === 'string' ? IMAGE_FAMILIES.find((f) => f.modelTypes.includes(mt)) : undefined;
}

/** Builds the processor from already loaded configs (tests, or a caller that has read them). */
export function createFamilyProcessor(family: ImageFamily, c: FamilyConfigs): FamilyProcessor {
  const notices = checkKeys(c.preprocessor, c.where, family.id, family.reads);
  return wrap(family.create(c), notices);
}

function wrap(proc: FamilyImageProcessor, notices: readonly string[]): FamilyProcessor {
  return {
    family: proc.family,
    placeholder: proc.placeholder,
    notices,
    ropeIndex: proc.ropeIndex?.bind(proc),
    async preprocess(inputs, opts = {}) {
      if (!inputs.length) throw fail('E_INPUT', 'preprocess: no images');
      const images: ProcessedImage[] = [];
      for (const input of inputs) images.push(await proc.process(typeof input === 'string' || input instanceof Uint8Array ? await decodeImage(input) : input, opts));
      return {
        tensors: proc.batch(images),
        tokensPerImage: images.map((i) => i.tokens),
        expandPrompt(text: string) {
          const parts = text.split(proc.placeholder);
          if (parts.length - 1 !== images.length)
            throw fail('E_PROMPT_IMAGES', `the prompt has ${parts.length - 1} ${proc.placeholder} placeholder(s) for ${images.length} image(s)`, {
              hint: `write one ${proc.placeholder} per image (the chat template does this)`,
            });
          return parts.reduce((s, p, i) => s + images[i - 1].expansion + p);
        },
      };
    },
  };
}

async function optionalJson(file: string, code: `E_${string}`): Promise<Record<string, unknown>> {
  try {
    await access(file);
  } catch {
    return {};
  }
  const v = await readJsonFile(file, code);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw fail(code, `${file}: expected a JSON object`, { file });
  return v as Record<string, unknown>;
}

/**
 * Reads a model folder's preprocessor_config.json (+ processor_config.json, config.json,
 * tokenizer_config.json when present) and returns its family's processor, or undefined when the configs
 * name no family here (a plain CLIP / SigLIP processor: image.ts handles it).
 */
export async function loadFamilyProcessor(dir: string): Promise<FamilyProcessor | undefined> {
  const where = join(dir, 'preprocessor_config.json');
  const preprocessor = await readJsonFile(where, 'E_PREPROCESSOR');
  if (!preprocessor || typeof preprocessor !== 'object' || Array.isArray(preprocessor)) throw fail('E_PREPROCESSOR', `${where}: expected a JSON object`, { file: where });
  const model = await optionalJson(join(dir, 'config.json'), 'E_CONFIG');
  const family = findFamily(preprocessor as Record<string, unknown>, model);
  if (!family) return undefined;
  return createFamilyProcessor(family, {
    preprocessor: preprocessor as Record<string, unknown>, model, where,
    processor: await optionalJson(join(dir, 'processor_config.json'), 'E_PREPROCESSOR'),
    tokenizer: await optionalJson(join(dir, 'tokenizer_config.json'), 'E_TOKENIZER'),
  });
}
