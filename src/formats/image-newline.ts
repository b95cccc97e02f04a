/**
 * Where a LLaVA-OneVision model keeps `image_newline` — the learned [hidden] vector that
 * pack_image_features appends after every row of anyres tile features. No onnx-community export carries it
 * (their vision_encoder ends at the projector and transformers.js runs the base patch alone), so nanomind
 * defines where it looks, in this order:
 *
 *   1. output       the vision encoder ONNX has a graph output named `image_newline` ([hidden] float):
 *                   it comes back with every encoder run (the nanomind convention; the fixture does this)
 *   2. initializer  the vision encoder ONNX has an initializer named `image_newline` (a graph that keeps
 *                   the weight but does not output it): read once from the file
 *   3. safetensors  a `*.safetensors` file in the model folder holds `image_newline` (or `<prefix>.image_newline`,
 *                   as Python checkpoints name it): only the header and that tensor's bytes are read.
 *                   `partition` copies that one tensor into the brick set as IMAGE_NEWLINE_FILE.
 *
 * Read by partition (to adopt and copy it), inspect (to say which) and the runtime (to pack features).
 */
import { fail } from '../errors.js';
import { DT, halfToFloat, typedView } from '../onnx/dtype.js';
import { loadModel, tensorBytes } from '../onnx/model-io.js';
import { findSafetensor, readSafetensorFloat32 } from './safetensors.js';

export const IMAGE_NEWLINE = 'image_newline';
/** The brick-set file partition writes when image_newline came from a checkpoint. */
export const IMAGE_NEWLINE_FILE = 'image_newline.safetensors';

export const isImageNewlineKey = (k: string): boolean => k === IMAGE_NEWLINE || k.endsWith(`.${IMAGE_NEWLINE}`);

export interface ImageNewlineSource {
  readonly from: 'output' | 'initializer' | 'safetensors';
  readonly where: string;
  /**
   * The vector as float32. For an output this parses the encoder and needs the output to be a constant
   * (an initializer, or Identity of one: E_IMAGE_NEWLINE otherwise); the runtime reads it from each run instead.
   */
  read(): Promise<Float32Array>;
}

type Loaded = Awaited<ReturnType<typeof loadModel>>;

function initializerReader(m: Loaded, name: string): (() => Promise<Float32Array>) | undefined {
  const init = m.model.graph!.initializer.find((t) => t.name === name);
  if (!init || (init.dataType !== DT.FLOAT && init.dataType !== DT.FLOAT16)) return undefined;
  return async () => {
    const v = typedView(init.dataType, await tensorBytes(init, m.dir));
    return init.dataType === DT.FLOAT ? Float32Array.from(v as Float32Array) : Float32Array.from(v as Uint16Array, halfToFloat);
  };
}

/** The value of the graph output image_newline when it is a constant: an initializer, or Identity of one. */
async function constantOutput(visionFile: string): Promise<Float32Array> {
  const m = await loadModel(visionFile, { checkExternal: false });
  const producer = m.model.graph!.node.find((n) => n.output.includes(IMAGE_NEWLINE));
  const read = initializerReader(m, IMAGE_NEWLINE) ?? (producer?.opType === 'Identity' ? initializerReader(m, producer.input[0]!) : undefined);
  if (!read) throw fail('E_IMAGE_NEWLINE', `${visionFile}: output '${IMAGE_NEWLINE}' is computed (${producer?.opType ?? 'no producer'}), not a float initializer nanomind can copy`,
    { hint: 'partition without --split-projector, or put image_newline in a *.safetensors beside the model' });
  return read();
}

/**
 * The image_newline of a model: `visionFile` is the vision encoder ONNX, `dirs` the folders to search for
 * safetensors (model folder, brick set). `outputs` (the encoder's output names) saves parsing the file
 * when image_newline is one of them. Undefined: none anywhere.
 */
export async function locateImageNewline(visionFile: string, dirs: readonly string[], outputs?: readonly string[]): Promise<ImageNewlineSource | undefined> {
  const output = { from: 'output' as const, where: `${visionFile} output '${IMAGE_NEWLINE}'`, read: () => constantOutput(visionFile) };
  if (outputs?.includes(IMAGE_NEWLINE)) return output;
  const m = await loadModel(visionFile, { checkExternal: false });
  if (m.model.graph!.output.some((o) => o.name === IMAGE_NEWLINE)) return output;
  const read = initializerReader(m, IMAGE_NEWLINE);
  if (read) return { from: 'initializer', where: `${visionFile} initializer '${IMAGE_NEWLINE}'`, read };
  for (const d of dirs) {
    const e = await findSafetensor(d, isImageNewlineKey);
    if (e) return { from: 'safetensors', where: `${e.file} tensor '${e.name}'`, read: async () => (await readSafetensorFloat32(e.file, e.name)).data };
  }
  return undefined;
}
