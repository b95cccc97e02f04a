/**
 * Adopting an encoder-decoder folder in the onnx-community / Optimum layout as a brick set; every file is
 * copied byte for byte, so there is nothing to verify. Two forms:
 *
 * - speech (Whisper): `onnx/encoder_model` (input_features → last_hidden_state) + `onnx/decoder_model_merged`
 *   (input_ids, encoder_hidden_states, …): an `audio` brick and a `decoder` brick;
 * - vision (Florence-2): `onnx/vision_encoder` (pixel_values → image_features) + `onnx/embed_tokens`
 *   (input_ids → inputs_embeds) + `onnx/encoder_model` (inputs_embeds, attention_mask → last_hidden_state,
 *   a text encoder) + `onnx/decoder_model_merged` (inputs_embeds, encoder_attention_mask,
 *   encoder_hidden_states, …): `vision`, `embed`, `encoder` and `decoder` bricks. The image features go in
 *   front of the prompt's embeddings (`merge: {mode: 'prepend'}` into encoder.inputs_embeds), the embed
 *   brick feeds both the encoder (the prompt) and the decoder (each generated token).
 *
 * The decoder reads the encoder output through cross-attention at every step: that connection carries
 * `cross: {mode: 'cross-attention'}`. This module owns which files form the layout, for `partition`
 * and `inspect` alike (`EncoderDecoderLayout.files`).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { BrickEntry, Connection } from '../formats/bricks.js';
import { DTYPE_FALLBACK, DTYPE_SUFFIXES, TENSOR, type BrickKind, type DtypeSuffix } from '../formats/names.js';
import { loadModel } from '../onnx/model-io.js';
import { copyBrick, interfaceOf } from './brick-files.js';

export const ENCODER_STEM = 'encoder_model';
/** Only the merged decoder: it computes the cross-attention K/V on the first step and reuses them after. */
export const DECODER_STEMS = ['decoder_model_merged'] as const;
/** The decoder input that takes the encoder output (Optimum's name). */
export const ENCODER_HIDDEN_STATES = 'encoder_hidden_states';

export const VISION_STEM = 'vision_encoder';
export const EMBED_STEM = 'embed_tokens';
/** The decoder input that takes the encoder's attention mask (Florence-2; Whisper has none). */
export const ENCODER_ATTENTION_MASK = 'encoder_attention_mask';

export interface EncoderDecoderFile {
  /** Brick name and kind in the brick set. */
  readonly name: string;
  readonly kind: BrickKind;
  readonly file: string;
}

export interface EncoderDecoderLayout {
  readonly dir: string;
  readonly suffix: string;
  readonly form: 'speech' | 'vision';
  readonly encoder: string;
  readonly decoder: string;
  /** Florence-2: the vision encoder and the token embedding of the chosen variant (or its DTYPE_FALLBACK). */
  readonly vision?: string;
  readonly embed?: string;
  /** Every file the brick set is made of, in brick order. */
  readonly files: readonly EncoderDecoderFile[];
  /** The folder's other .onnx files (other variants; decoder_model / decoder_with_past_model), named in a notice. */
  readonly unused: readonly string[];
}

const fileName = (stem: string, suffix: string) => `${stem}${suffix ? `_${suffix}` : ''}.onnx`;

/** The encoder/decoder pair in `dir/onnx` (or `dir`) for `dtype` (a suffix such as 'fp16'); undefined when the folder is not in this layout. */
export async function findEncoderDecoderLayout(dir: string, dtype?: string): Promise<EncoderDecoderLayout | undefined> {
  for (const d of [join(dir, 'onnx'), dir]) {
    const names = new Set((await readdir(d).catch(() => [] as string[])).filter((f) => f.endsWith('.onnx')));
    const pairs = new Map<string, { encoder: string; decoder: string }>();
    for (const suffix of DTYPE_SUFFIXES) {
      const decoder = DECODER_STEMS.map((s) => fileName(s, suffix)).find((n) => names.has(n));
      if (names.has(fileName(ENCODER_STEM, suffix)) && decoder) pairs.set(suffix, { encoder: join(d, fileName(ENCODER_STEM, suffix)), decoder: join(d, decoder) });
    }
    if (!pairs.size) continue;
    const suffix = dtype ?? '';
    const pair = pairs.get(suffix);
    if (!pair)
      throw fail('E_PARTITION_DTYPE', `${d}: no '${suffix || 'fp32'}' encoder/decoder pair (available: ${[...pairs.keys()].map((s) => s || "'' (fp32)").join(', ')})`,
        { hint: 'pick one with --dtype' });
    // Florence-2: a vision encoder and a token embedding beside the pair (same variant, else DTYPE_FALLBACK).
    const pick = (stem: string) => [suffix, ...(DTYPE_FALLBACK[suffix as DtypeSuffix] ?? [''])].map((s) => fileName(stem, s)).find((n) => names.has(n));
    const visionName = pick(VISION_STEM), embedName = pick(EMBED_STEM);
    const audio = [...names].filter((n) => /^audio_encoder(_|\.)/.test(n));
    if (audio.length || (visionName === undefined) !== (embedName === undefined) || [...names].some((n) => /^(vision_encoder|embed_tokens)(_|\.)/.test(n)) && !visionName && !embedName)
      throw fail('E_PARTITION_ENCODER_DECODER', `${d}: an encoder-decoder model with ${[...audio, visionName ?? '', embedName ?? ''].filter(Boolean).join(' and ') || 'vision/embed files of another variant'} beside it; nanomind adopts speech (encoder + decoder, Whisper) and vision (vision_encoder + embed_tokens + encoder + decoder, Florence-2) encoder-decoders`,
        { hint: 'a vision encoder-decoder needs both vision_encoder and embed_tokens (for this --dtype or its fallback)', notes: [...names] });
    const vision = visionName && join(d, visionName), embed = embedName && join(d, embedName);
    const files: EncoderDecoderFile[] = vision && embed
      ? [{ name: 'vision', kind: 'vision', file: vision }, { name: 'embed', kind: 'embed', file: embed },
        { name: 'encoder', kind: 'encoder', file: pair.encoder }, { name: 'decoder', kind: 'decoder', file: pair.decoder }]
      : [{ name: 'audio', kind: 'audio', file: pair.encoder }, { name: 'decoder', kind: 'decoder', file: pair.decoder }];
    const unused = [...names].filter((n) => !files.some((f) => f.file === join(d, n))).sort();
    const layout: EncoderDecoderLayout = { dir: d, suffix, form: vision ? 'vision' : 'speech', ...pair, vision, embed, files, unused };
    await checkEncoderDecoder(layout);
    return layout;
  }
  return undefined;
}

/** The files' interfaces: an audio encoder, or vision + embed + a text encoder; a merged decoder that takes the encoder output by cross-attention. */
async function checkEncoderDecoder(layout: EncoderDecoderLayout): Promise<void> {
  const io = async (file: string) => interfaceOf((await loadModel(file, { checkExternal: false })).model);
  const has = (list: readonly { name: string }[], n: string) => list.some((i) => i.name === n);
  const enc = await io(layout.encoder);
  const dec = await io(layout.decoder);
  const vision = layout.form === 'vision';
  const encInputs = vision ? [TENSOR.inputsEmbeds, TENSOR.attentionMask] : [TENSOR.inputFeatures];
  if (!encInputs.every((n) => has(enc.inputs, n)))
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.encoder}: the encoder takes ${enc.inputs.map((i) => i.name).join(', ')}; ${vision
      ? 'beside vision_encoder and embed_tokens it should take inputs_embeds and attention_mask (Florence-2)'
      : 'only audio encoders (input_features, Whisper) are adopted without vision_encoder and embed_tokens'}`,
      { hint: 'text-only encoder-decoder models (T5, BART, Marian) are not supported yet' });
  if (enc.outputs.length !== 1)
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.encoder}: expected one output (last_hidden_state), found ${enc.outputs.map((o) => o.name).join(', ')}`);
  const tokens = vision ? TENSOR.inputsEmbeds : TENSOR.inputIds;
  const issues = [tokens, ENCODER_HIDDEN_STATES, 'use_cache_branch'].filter((n) => !has(dec.inputs, n));
  if (!has(dec.outputs, TENSOR.logits)) issues.push('logits (output)');
  if (issues.length)
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.decoder}: the decoder lacks ${issues.join(', ')}`,
      { notes: dec.inputs.map((i) => `input ${i.name}`) });
  if (vision) {
    const v = await io(layout.vision!), e = await io(layout.embed!);
    if (!has(v.inputs, TENSOR.pixelValues) || v.outputs.length !== 1)
      throw fail('E_PARTITION_ENCODER_DECODER', `${layout.vision}: the vision encoder should take pixel_values and give one output (image_features)`);
    if (!has(e.inputs, TENSOR.inputIds) || !has(e.outputs, TENSOR.inputsEmbeds))
      throw fail('E_PARTITION_ENCODER_DECODER', `${layout.embed}: the token embedding should take input_ids and give inputs_embeds`);
  }
}

/** Copies the files (checked by findEncoderDecoderLayout) as bricks and says how they connect. */
export async function adoptEncoderDecoder(layout: EncoderDecoderLayout, out: string): Promise<{ bricks: BrickEntry[]; connections: Connection[]; notes: string[] }> {
  const bricks: BrickEntry[] = [];
  for (const f of layout.files) bricks.push(await copyBrick(out, await loadModel(f.file), f.name, f.kind));
  const by = (name: string) => bricks.find((b) => b.name === name)!;
  const encoder = layout.form === 'vision' ? by('encoder') : by('audio');
  const decoder = by('decoder');
  const cross: Connection = { from: `${encoder.name}.${encoder.outputs[0]!.name}`, to: `decoder.${ENCODER_HIDDEN_STATES}`, cross: { mode: 'cross-attention' } };
  if (layout.form === 'speech')
    return { bricks, connections: [cross], notes: [`encoder-decoder model: ${encoder.file} → ${decoder.file} through cross-attention`] };
  const vision = by('vision'), embed = by('embed');
  const embeds = `embed.${TENSOR.inputsEmbeds}`;
  return {
    bricks,
    connections: [
      { from: `vision.${vision.outputs[0]!.name}`, to: `encoder.${TENSOR.inputsEmbeds}`, merge: { mode: 'prepend' } },
      { from: embeds, to: `encoder.${TENSOR.inputsEmbeds}` },
      cross,
      { from: embeds, to: `decoder.${TENSOR.inputsEmbeds}` },
    ],
    notes: [`vision encoder-decoder model: image features prepended to the prompt's embeddings → ${encoder.file} → ${decoder.file} through cross-attention`],
  };
}
