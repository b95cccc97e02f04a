/**
 * Canonical brick kinds and interface tensor names, shared by the compiler stages and the runtime
 * (the onnx-community / transformers.js names, so their files are bricks as they are).
 */
/** `encoder`: the text encoder of an encoder-decoder language model (Florence-2's BART encoder), which the decoder cross-attends to. */
export const BRICK_KINDS = ['vision', 'projector', 'embed', 'decoder', 'audio', 'encoder'] as const;
export type BrickKind = (typeof BRICK_KINDS)[number];

export const TENSOR = {
  pixelValues: 'pixel_values',
  inputFeatures: 'input_features',
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  imageFeatures: 'image_features',
  audioFeatures: 'audio_features',
  /** Vision tower output before the projector, when the projector is its own brick. */
  visionHidden: 'vision_hidden_states',
  audioHidden: 'audio_hidden_states',
  inputsEmbeds: 'inputs_embeds',
  logits: 'logits',
} as const;

/** onnx-community split-layout file stems and the brick each one is. */
export const SPLIT_FILES: Readonly<Record<string, BrickKind>> = {
  vision_encoder: 'vision',
  audio_encoder: 'audio',
  embed_tokens: 'embed',
  decoder_model_merged: 'decoder',
  decoder_model: 'decoder',
  model: 'decoder',
};

/** Variant suffixes used by onnx-community repositories (`decoder_model_merged_q4f16.onnx`). */
export const DTYPE_SUFFIXES = ['', 'fp16', 'int8', 'uint8', 'quantized', 'q4', 'q4f16', 'bnb4'] as const;
export type DtypeSuffix = (typeof DTYPE_SUFFIXES)[number];

/**
 * Where a graph lacks the asked variant, the variants used instead, in order ('' = fp32): the
 * fp16-activation variants try fp16 first, everything ends at the full-precision file. `pull` fetches
 * by it and `partition --dtype` adopts by it, so a pulled folder partitions as pulled (why this rule:
 * src/hub/select.ts).
 */
export const DTYPE_FALLBACK: Readonly<Record<DtypeSuffix, readonly DtypeSuffix[]>> = {
  '': [], fp16: [''], q4f16: ['fp16', ''], int8: [''], uint8: [''], quantized: [''], q4: [''], bnb4: [''],
};

/** Name scopes PyTorch's exporter gives each part of a HF multimodal model. */
export const SCOPES: Readonly<Record<BrickKind, readonly string[]>> = {
  vision: ['vision_tower', 'vision_model', 'visual', 'vision_encoder'],
  audio: ['audio_tower', 'audio_encoder', 'encoder'],
  projector: ['multi_modal_projector', 'mm_projector', 'projector', 'audio_projector'],
  embed: ['embed_tokens', 'wte', 'word_embeddings'],
  decoder: ['language_model', 'model', 'transformer', 'decoder'],
  // Never cut out of a monolithic graph: only adopted from an encoder-decoder folder (partition/encoder-decoder.ts).
  encoder: [],
};

export const pastKey = (i: number): string => `past_key_values.${i}.key`;
export const pastValue = (i: number): string => `past_key_values.${i}.value`;

/** `decoder_model_merged_q4f16.onnx` → stem `decoder_model_merged`, suffix `q4f16` (`''` = fp32); undefined if not .onnx. */
export function splitOnnxName(name: string): { stem: string; suffix: string } | undefined {
  if (!name.endsWith('.onnx')) return undefined;
  const base = name.slice(0, -'.onnx'.length);
  for (const s of DTYPE_SUFFIXES) if (s && base.endsWith(`_${s}`)) return { stem: base.slice(0, -s.length - 1), suffix: s };
  return { stem: base, suffix: '' };
}
