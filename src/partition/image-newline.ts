/**
 * LLaVA-OneVision's image_newline in a brick set: the runtime packs anyres tiles only when it finds that
 * vector (src/formats/image-newline.ts). An encoder that outputs or holds it is adopted as it is; one found
 * in a model-folder checkpoint (`*.safetensors`, often GBs) is copied alone into IMAGE_NEWLINE_FILE, so the
 * brick set stays self-contained. Either way the brick set is adopted; the note says which.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrickEntry, FileEntry } from '../formats/bricks.js';
import { IMAGE_NEWLINE, IMAGE_NEWLINE_FILE, locateImageNewline } from '../formats/image-newline.js';
import { writeSafetensorsFloat32 } from '../formats/safetensors.js';
import { sha256File } from '../onnx/model-io.js';

export const LLAVA_ONEVISION = 'llava_onevision';

/** Where a brick set's image_newline comes from, as a one-line note (after `adoptImageNewline` wrote it). */
export async function imageNewlineNote(visionFile: string, outputs: readonly string[], dirs: readonly string[]): Promise<string> {
  const s = await locateImageNewline(visionFile, outputs, dirs);
  return s
    ? `LLaVA-OneVision anyres: image_newline from ${s.where}; the runtime encodes the base patch + tiles and packs them (unpad, anyres_max, newline rows)`
    : 'LLaVA-OneVision: no image_newline (vision encoder output or initializer, or *.safetensors): the runtime runs each image as its base patch alone, as transformers.js does';
}

/**
 * Copies image_newline from a model-folder safetensors into `out` when the vision brick neither outputs
 * nor holds it. Returns the file entry for bricks.json (none when nothing was copied) and the note.
 */
export async function adoptImageNewline(out: string, vision: BrickEntry, modelDirs: readonly string[]): Promise<{ files: FileEntry[]; note: string }> {
  const visionFile = join(out, vision.file);
  const outputs = vision.outputs.map((o) => o.name);
  const found = await locateImageNewline(visionFile, outputs, modelDirs);
  const files: FileEntry[] = [];
  if (found?.from === 'safetensors') {
    const data = await found.read();
    const file = join(out, IMAGE_NEWLINE_FILE);
    await writeSafetensorsFloat32(file, { [IMAGE_NEWLINE]: { data, shape: [data.length] } });
    files.push({ path: IMAGE_NEWLINE_FILE, sha256: await sha256File(file), bytes: (await stat(file)).size });
  }
  return { files, note: await imageNewlineNote(visionFile, outputs, [out]) };
}
