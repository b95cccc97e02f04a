/**
 * Adopting an encoder-decoder folder in the onnx-community / Optimum layout (Whisper:
 * `onnx/encoder_model[_suffix].onnx` + `onnx/decoder_model_merged[_suffix].onnx`) as a two-brick set:
 * an `audio` brick (input_features → last_hidden_state) and a `decoder` brick that reads it through
 * cross-attention (`encoder_hidden_states`) at every step. Both files are copied byte for byte, so there
 * is nothing to verify; the connection carries `cross: {mode: 'cross-attention'}` instead of a merge.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { BrickEntry, Connection } from '../formats/bricks.js';
import { DTYPE_SUFFIXES, TENSOR } from '../formats/names.js';
import { loadModel } from '../onnx/model-io.js';
import { copyBrick, interfaceOf } from './brick-files.js';

export const ENCODER_STEM = 'encoder_model';
/** Only the merged decoder: it computes the cross-attention K/V on the first step and reuses them after. */
export const DECODER_STEMS = ['decoder_model_merged'] as const;
/** The decoder input that takes the encoder output (Optimum's name). */
export const ENCODER_HIDDEN_STATES = 'encoder_hidden_states';

export interface EncoderDecoderLayout {
  readonly dir: string;
  readonly suffix: string;
  readonly encoder: string;
  readonly decoder: string;
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
    const extra = [...names].filter((n) => /^(vision_encoder|embed_tokens|audio_encoder)(_|\.)/.test(n));
    if (extra.length)
      throw fail('E_PARTITION_ENCODER_DECODER', `${d}: an encoder-decoder model with ${extra.map((n) => n.replace(/(_[a-z0-9]+)?\.onnx$/, '')).filter((x, i, a) => a.indexOf(x) === i).join(' and ')} beside it (Florence-2 style); nanomind adopts audio encoder-decoders (Whisper) only`,
        { hint: 'vision encoder-decoder models are not supported yet', notes: [...names] });
    const layout = { dir: d, suffix, ...pair };
    await checkEncoderDecoder(layout);
    return layout;
  }
  return undefined;
}

/** The pair's interfaces: an audio encoder, and a merged decoder that takes its output by cross-attention. */
async function checkEncoderDecoder(layout: EncoderDecoderLayout): Promise<void> {
  const io = async (file: string) => interfaceOf((await loadModel(file, { checkExternal: false })).model);
  const enc = await io(layout.encoder);
  const dec = await io(layout.decoder);
  if (!enc.inputs.some((i) => i.name === TENSOR.inputFeatures))
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.encoder}: the encoder takes ${enc.inputs.map((i) => i.name).join(', ')}; only audio encoders (input_features, Whisper) are adopted`,
      { hint: 'text encoder-decoder models (T5, BART, Marian) are not supported yet' });
  if (enc.outputs.length !== 1)
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.encoder}: expected one output (last_hidden_state), found ${enc.outputs.map((o) => o.name).join(', ')}`);
  const issues = [TENSOR.inputIds, ENCODER_HIDDEN_STATES, 'use_cache_branch'].filter((n) => !dec.inputs.some((i) => i.name === n));
  if (!dec.outputs.some((o) => o.name === TENSOR.logits)) issues.push('logits (output)');
  if (issues.length)
    throw fail('E_PARTITION_ENCODER_DECODER', `${layout.decoder}: the decoder lacks ${issues.join(', ')}`,
      { notes: dec.inputs.map((i) => `input ${i.name}`) });
}

/** Copies the pair (checked by findEncoderDecoderLayout) as an `audio` and a `decoder` brick. */
export async function adoptEncoderDecoder(layout: EncoderDecoderLayout, out: string): Promise<{ bricks: BrickEntry[]; connections: Connection[]; notes: string[] }> {
  const audio = await copyBrick(out, await loadModel(layout.encoder), 'audio', 'audio');
  const decoder = await copyBrick(out, await loadModel(layout.decoder), 'decoder', 'decoder');
  return {
    bricks: [audio, decoder],
    connections: [{ from: `audio.${audio.outputs[0]!.name}`, to: `decoder.${ENCODER_HIDDEN_STATES}`, cross: { mode: 'cross-attention' } }],
    notes: [`encoder-decoder model: ${audio.file} → ${decoder.file} through cross-attention`],
  };
}
