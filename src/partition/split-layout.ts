/**
 * Adopting an onnx-community / transformers.js split folder as a brick set: its files already are
 * bricks with the canonical interfaces, so they are copied byte for byte (a `--dtype` suffix picks the
 * variant), and only `--split-projector` cuts anything (the projector out of the vision encoder).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { readJsonFile } from '../formats/json-file.js';
import type { BrickEntry, Connection } from '../formats/bricks.js';
import { TENSOR, splitOnnxName, type BrickKind } from '../formats/names.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel, type OnnxFile } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { copyBrick, interfaceOf, writeBrick } from './brick-files.js';
import { projectorBoundary, type BrickCut } from './detect.js';

export interface SplitFile { readonly stem: string; readonly kind: BrickKind; readonly file: string }
export interface SplitLayout { readonly dir: string; readonly suffix: string; readonly files: readonly SplitFile[] }

/**
 * An encoder-decoder model (Whisper, Florence-2, T5): `encoder_model*.onnx` beside `decoder_model*.onnx`
 * (in `dir/onnx` or `dir`), or a config.json saying `is_encoder_decoder` (a folder `pull` fetched only the
 * decoder files of). Its decoder cross-attends to the encoder, so adopting the decoder alone as a text
 * decoder would silently drop the encoder: intake hands these to ./encoder-decoder.ts, which adopts
 * Whisper- and Florence-2-shaped folders and refuses the rest.
 */
export async function isEncoderDecoderLayout(dir: string): Promise<boolean> {
  for (const d of [join(dir, 'onnx'), dir]) {
    const stems = (await readdir(d).catch(() => [] as string[])).map((f) => splitOnnxName(f)?.stem).filter(Boolean);
    if (stems.includes('encoder_model') && stems.some((s) => /^decoder_(model|model_merged|with_past_model)$/.test(s!))) return true;
  }
  const file = join(dir, 'config.json');
  // A config.json that is there but not JSON is refused here, as readModelConfig refuses it.
  const config = (await stat(file).catch(() => undefined))?.isFile() ? await readJsonFile(file, 'E_CONFIG_INVALID') as Record<string, any> | null : undefined;
  return config?.is_encoder_decoder === true || config?.text_config?.is_encoder_decoder === true;
}

/** The vision encoder's interface cut in two at the projector: the cuts and the file's feature output. */
export function projectorCuts(g: Graph, io: { inputs: readonly { name: string }[]; outputs: readonly { name: string }[] }, override?: string): { cuts: BrickCut[]; output: string } {
  const input = io.inputs[0].name;
  const output = io.outputs[0].name;
  const boundary = projectorBoundary(g, { kind: 'vision', input, output }, override);
  return {
    output,
    cuts: [
      { name: 'vision', kind: 'vision', inputs: [{ name: input }], outputs: [{ name: boundary, as: TENSOR.visionHidden }] },
      { name: 'projector', kind: 'projector', inputs: [{ name: boundary, as: TENSOR.visionHidden }], outputs: [{ name: output }] },
    ],
  };
}

export interface Adopted {
  readonly bricks: BrickEntry[];
  readonly connections: Connection[];
  readonly notes: string[];
  /** When a file was cut (split projector), the original to verify the cut against. */
  readonly cutFrom?: OnnxFile;
  readonly cutOutputs?: string[];
}

export async function adoptSplitLayout(layout: SplitLayout, out: string,
  o: { splitProjector: boolean; cutProjector?: string; externalData?: number; tokenIds: { image?: number; audio?: number } }): Promise<Adopted> {
  const bricks: BrickEntry[] = [];
  const connections: Connection[] = [];
  const notes: string[] = [];
  let cutFrom: OnnxFile | undefined;
  let cutOutputs: string[] | undefined;
  const order: BrickKind[] = ['vision', 'audio', 'embed', 'decoder'];
  const files = [...layout.files].sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
  for (const f of files) {
    const src = await loadModel(f.file);
    if (f.kind === 'vision' && (o.splitProjector || o.cutProjector)) {
      const g = new Graph(src.model.graph!);
      for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
      const { cuts, output } = projectorCuts(g, interfaceOf(src.model), o.cutProjector);
      for (const cut of cuts) {
        const { model } = extractModel(src.model, g, { graphName: cut.name, inputs: cut.inputs, outputs: cut.outputs });
        bricks.push(await writeBrick(out, cut.name, cut.kind, model, src, o.externalData));
      }
      connections.push({ from: `vision.${TENSOR.visionHidden}`, to: `projector.${TENSOR.visionHidden}` });
      cutFrom = src;
      cutOutputs = [output];
      continue;
    }
    bricks.push(await copyBrick(out, src, f.kind, f.kind));
  }
  const decoder = bricks.find((b) => b.kind === 'decoder');
  const embed = bricks.find((b) => b.kind === 'embed');
  if (!decoder) throw fail('E_PARTITION_INPUT', `${layout.dir}: no decoder file (decoder_model_merged*.onnx)`);
  const takesEmbeds = decoder.inputs.some((i) => i.name === TENSOR.inputsEmbeds);
  if (takesEmbeds && !embed) throw fail('E_PARTITION_INPUT', `${layout.dir}: the decoder takes inputs_embeds but there is no embed_tokens file`);
  if (takesEmbeds) connections.push({ from: `embed.${embed!.outputs[0].name}`, to: `decoder.${TENSOR.inputsEmbeds}` });
  for (const b of bricks) {
    const kind = b.kind === 'projector' ? 'vision' : b.kind;
    if ((kind !== 'vision' && kind !== 'audio') || bricks.some((x) => x.kind === 'projector') && b.kind === 'vision') continue;
    const id = o.tokenIds[kind === 'vision' ? 'image' : 'audio'];
    if (id === undefined)
      throw fail('E_PARTITION_NOT_FOUND', `config.json names no ${kind === 'vision' ? 'image_token_index' : 'audio_token_index'}; cannot tell which tokens the ${kind} features replace`,
        { hint: 'add it to config.json next to the onnx/ folder' });
    if (!takesEmbeds) throw fail('E_PARTITION_INPUT', `${layout.dir}: the decoder takes input_ids, so ${kind} features cannot be merged into it`);
    const feature = b.outputs.find((x) => /features|embeds/.test(x.name)) ?? b.outputs[0];
    connections.push({ from: `${b.name}.${feature.name}`, to: `decoder.${TENSOR.inputsEmbeds}`, merge: { placeholderTokenId: id, mode: 'replace-rows' } });
  }
  if (!takesEmbeds && bricks.length === 1) notes.push('text-only decoder taking input_ids: a one-brick model');
  return { bricks, connections, notes, cutFrom, cutOutputs };
}

