/**
 * The contract between the generic image input code and one model family's processor (Qwen2-VL,
 * Idefics3/SmolVLM, LLaVA-OneVision, Gemma 3…). A family owns three things, and nothing outside its file
 * branches on the model type: the pixel preprocessing, the extra model inputs it produces beside
 * `pixel_values`, and how many placeholder tokens (feature rows) each image becomes in the prompt.
 */
import type { Image8 } from '../pil-resize.js';
import type { Resampler } from '../image.js';

/** A tensor as onnxruntime takes it (the runtime wraps it; this module does not import onnxruntime). */
export type TensorLike =
  | { readonly type: 'float32'; readonly data: Float32Array; readonly dims: readonly number[] }
  | { readonly type: 'int64'; readonly data: BigInt64Array; readonly dims: readonly number[] }
  | { readonly type: 'bool'; readonly data: Uint8Array; readonly dims: readonly number[] };

/** One image after its family's processor. */
export interface ProcessedImage {
  /**
   * This image's tensors (batch of one) under Hugging Face's processor output names: the model inputs
   * (pixel_values, image_grid_thw, image_sizes, pixel_attention_mask) and, for Idefics3, rows / cols,
   * which no session takes. A caller feeds a session the names its inputs list (transformers.js' Qwen2-VL
   * vision encoder calls image_grid_thw `grid_thw`).
   */
  readonly tensors: Readonly<Record<string, TensorLike>>;
  /** Placeholder tokens the image becomes in the prompt (the rows of image features the model merges). */
  readonly tokens: number;
  /** The text that replaces this image's placeholder in the prompt. */
  readonly expansion: string;
}

/** The configs a family reads, as loaded from the model folder ({} when a file is absent). */
export interface FamilyConfigs {
  readonly preprocessor: Readonly<Record<string, unknown>>; // preprocessor_config.json
  readonly processor: Readonly<Record<string, unknown>>; // processor_config.json
  readonly model: Readonly<Record<string, unknown>>; // config.json
  readonly tokenizer: Readonly<Record<string, unknown>>; // tokenizer_config.json
  readonly where: string; // the preprocessor_config.json path, for messages
}

export interface ProcessOptions {
  /** 'pillow' (default): Python transformers' resampling; 'sharp-affine': transformers.js' (see image.ts). */
  readonly resampler?: Resampler;
}

export interface FamilyImageProcessor {
  readonly family: string;
  /** The placeholder a chat template writes for one image (expanded by `expansion`). */
  readonly placeholder: string;
  process(img: Image8, opts?: ProcessOptions): Promise<ProcessedImage>;
  /** The model inputs for several images of one prompt, in order. */
  batch(images: readonly ProcessedImage[]): Record<string, TensorLike>;
  /**
   * Families whose decoder takes 3-D (mRoPE) position ids: the three position rows of a prompt's tokens,
   * axis-major [3 × ids.length], given each image's tensors in prompt order, and the offset of the text
   * that follows (decode step positions are cache length + delta).
   */
  ropeIndex?(ids: readonly number[], images: readonly Readonly<Record<string, TensorLike>>[]): { positions: BigInt64Array; delta: number };
}

export interface ImageFamily {
  readonly id: string;
  /** `image_processor_type` values in preprocessor_config.json that select this family. */
  readonly imageProcessorTypes: readonly string[];
  /** config.json `model_type` values that select it when the preprocessor config names no type. */
  readonly modelTypes: readonly string[];
  /** preprocessor_config.json keys this family honours (see keys.ts for what happens to the others). */
  readonly reads: readonly string[];
  /** Checks the configs (every problem at once, E_PREPROCESSOR) and builds the processor. */
  create(c: FamilyConfigs): FamilyImageProcessor;
}
