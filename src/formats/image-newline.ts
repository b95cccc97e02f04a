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
import { join } from 'node:path';
import { DT, halfToFloat, typedView } from '../onnx/dtype.js';
import { loadModel, tensorBytes } from '../onnx/model-io.js';
import { findSafetensor, readSafetensorFloat32 } from './safetensors.js';

export const IMAGE_NEWLINE = 'image_newline';
/** The brick-set file partition writes when image_newline came from a checkpoint. */
export const IMAGE_NEWLINE_FILE = 'image_newline.safetensors';

export const isImageNewlineKey = (k: string): boolean => k === IMAGE_NEWLINE || k.endsWith(`.${IMAGE_NEWLINE}`);

export type ImageNewlineSource =
  | { readonly from: 'output'; readonly where: string }
  | { readonly from: 'initializer' | 'safetensors'; readonly where: string; readonly read: () => Promise<Float32Array> };

/**
 * The image_newline of a model: `visionFile` is the vision encoder ONNX, `outputs` its output names,
 * `dirs` the folders to search for safetensors (model folder, brick set). Undefined: none anywhere.
 */
export async function locateImageNewline(visionFile: string, outputs: readonly string[], dirs: readonly string[]): Promise<ImageNewlineSource | undefined> {
  if (outputs.includes(IMAGE_NEWLINE)) return { from: 'output', where: `${visionFile} output '${IMAGE_NEWLINE}'` };
  const m = await loadModel(visionFile, { checkExternal: false });
  const init = m.model.graph!.initializer.find((t) => t.name === IMAGE_NEWLINE);
  if (init && (init.dataType === DT.FLOAT || init.dataType === DT.FLOAT16))
    return {
      from: 'initializer', where: `${visionFile} initializer '${IMAGE_NEWLINE}'`,
      read: async () => {
        const v = typedView(init.dataType, await tensorBytes(init, m.dir));
        return init.dataType === DT.FLOAT ? Float32Array.from(v as Float32Array) : Float32Array.from(v as Uint16Array, halfToFloat);
      },
    };
  for (const d of dirs) {
    const e = await findSafetensor(d, isImageNewlineKey);
    if (e) return { from: 'safetensors', where: `${e.file} tensor '${e.name}'`, read: async () => (await readSafetensorFloat32(e.file, e.name)).data };
  }
  return undefined;
}

export const imageNewlineFile = (dir: string) => join(dir, IMAGE_NEWLINE_FILE);
