/**
 * LLaVA-OneVision's image_newline in a brick set: the runtime packs anyres tiles only when it finds that
 * vector (src/formats/image-newline.ts says where it looks). A vision brick that outputs or holds it is
 * adopted as it is. Otherwise — the vector is in a model-folder checkpoint (`*.safetensors`, often GBs),
 * or `--split-projector` cut the encoder output that carried it — that one tensor is copied into
 * IMAGE_NEWLINE_FILE, so the brick set stays self-contained. Either way the brick set is adopted; the
 * note says which.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrickEntry, FileEntry } from '../formats/bricks.js';
import { IMAGE_NEWLINE, IMAGE_NEWLINE_FILE, locateImageNewline } from '../formats/image-newline.js';
import { writeSafetensorsFloat32 } from '../formats/safetensors.js';
import { sha256File } from '../onnx/model-io.js';

export const LLAVA_ONEVISION = 'llava_onevision';

const RUNS_BASE_ONLY = 'LLaVA-OneVision: no image_newline (vision encoder output or initializer, or *.safetensors): the runtime runs each image as its base patch alone, as transformers.js does';
const PACKS = 'the runtime encodes the base patch + tiles and packs them (unpad, anyres_max, newline rows)';

/** What inspect says of a model's vision encoder file (what partition will adopt). */
export async function imageNewlineNote(visionFile: string, dirs: readonly string[]): Promise<string> {
  const s = await locateImageNewline(visionFile, dirs);
  return s ? `LLaVA-OneVision anyres: image_newline from ${s.where}; ${PACKS}` : RUNS_BASE_ONLY;
}

/**
 * Makes sure the brick set in `out` carries image_newline when the model has it. `vision` is the brick the
 * vision chain starts with, `chainOutputs` the outputs of the chain's last brick, `source` the model's
 * vision encoder file. Returns the file entry for bricks.json (none when nothing was copied) and the note.
 */
export async function adoptImageNewline(out: string, vision: BrickEntry, chainOutputs: readonly string[], source: string,
  modelDirs: readonly string[]): Promise<{ files: FileEntry[]; note: string }> {
  const inBricks = await locateImageNewline(join(out, vision.file), [], chainOutputs);
  if (inBricks) return { files: [], note: `LLaVA-OneVision anyres: image_newline from the ${inBricks.from} of brick '${vision.name}'; ${PACKS}` };
  const found = await locateImageNewline(source, modelDirs);
  if (!found) return { files: [], note: RUNS_BASE_ONLY };
  const data = await found.read();
  const file = join(out, IMAGE_NEWLINE_FILE);
  await writeSafetensorsFloat32(file, { [IMAGE_NEWLINE]: { data, shape: [data.length] } });
  return {
    files: [{ path: IMAGE_NEWLINE_FILE, sha256: await sha256File(file), bytes: (await stat(file)).size }],
    note: `LLaVA-OneVision anyres: image_newline copied from ${found.where} into ${IMAGE_NEWLINE_FILE}; ${PACKS}`,
  };
}
