/**
 * The calibration list rknn.build reads when it quantizes a float NPU brick to w8a8: one line per real
 * sample, each input a .npy. Samples are the images (or WAVs) of `--calib DIR` prepared by the model's
 * own processor through the runtime (`openModel(...).prepareMedia`: Qwen2-VL patches + grid, Idefics3
 * tiles, the generic resize/normalize, log-mel), so the NPU's int8 ranges are those of what it will be
 * fed. `builtin` names the embedded model's calibration questions. There is no made-up fallback: static int8 ranges of random noise would quietly cost accuracy.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { BrickEntry } from '../formats/bricks.js';
import { loadEvalSet } from '../eval/index.js';
import { isTensorLike } from '../run/feeds.js';
import { writeNpyFile } from '../run/inputs/npy.js';
import { openModel } from '../run/model.js';
import type { RknnBrick } from './rknn.js';

const MEDIA: Readonly<Record<string, { kind: 'image' | 'audio'; ext: RegExp }>> = {
  vision: { kind: 'image', ext: /\.(png|jpe?g|webp|gif|tiff?)$/i },
  audio: { kind: 'audio', ext: /\.wav$/i },
};

/**
 * The media files of a calibration folder, relative to it: those of its question set (eval.jsonl, as
 * `nanomind eval` reads it) when it has one, else the files in it.
 */
async function mediaFiles(dir: string, kind: 'image' | 'audio'): Promise<string[]> {
  const names = await readdir(dir).catch(() => { throw fail('E_COMPILE_CALIB', `${dir}: cannot read the calibration directory`); });
  if (!names.includes('eval.jsonl')) return names.sort();
  const items = await loadEvalSet(dir);
  return [...new Set(items.map((q) => (kind === 'image' ? q.image : q.audio)).filter((f): f is string => !!f))];
}

/** Writes `calibration/<brick>/{k}_<input>.npy` and `dataset.txt` from the media files of `calibDir`. */
export async function writeRealCalibration(setDir: string, brick: BrickEntry, inputs: RknnBrick['inputs'], calibDir: string, outDir: string, max = 16):
  Promise<{ list: string; files: string[]; samples: number }> {
  const media = MEDIA[brick.kind];
  if (!media) throw fail('E_COMPILE_CALIB', `brick '${brick.name}' (${brick.kind}): rknn-toolkit2 calibration from --calib is made for vision and audio encoders only`,
    { hint: 'quantize the brick with `nanomind quantize --calib DIR` instead, or keep it fp16 on the NPU' });
  const names = (await mediaFiles(calibDir, media.kind)).filter((n) => media.ext.test(n)).slice(0, max);
  if (!names.length) throw fail('E_COMPILE_CALIB', `${calibDir}: no ${media.kind === 'image' ? 'images' : 'WAV files'} to calibrate brick '${brick.name}' with`,
    { hint: `put a few representative ${media.kind === 'image' ? 'images' : 'WAVs'} there` });
  const m = await openModel(setDir, { checkHashes: false });
  const dir = join('calibration', brick.name);
  await mkdir(join(outDir, dir), { recursive: true });
  const lines: string[] = [];
  try {
    const enc = m.set.encoders.find((e) => e.chain[0]?.name === brick.name);
    if (!enc) throw fail('E_COMPILE_CALIB', `brick '${brick.name}' is not the first brick of an encoder chain: its inputs do not come from a processor`);
    for (const [k, name] of names.entries()) {
      const prepared = await m.prepareMedia(media.kind, { file: join(calibDir, name) });
      const feeds = isTensorLike(prepared.input) ? { [enc.input.name]: prepared.input } : prepared.input;
      const files: string[] = [];
      for (const [i, spec] of brick.inputs.entries()) {
        const t = feeds[spec.name];
        const want = inputs[i]!.shape;
        if (!t) throw fail('E_COMPILE_CALIB', `${name}: the processor gives no '${spec.name}' for brick '${brick.name}'`);
        if (t.dims.length !== want.length || t.dims.some((d, j) => d !== want[j]))
          throw fail('E_COMPILE_CALIB', `${name}: prepared '${spec.name}' is [${t.dims.join(', ')}], the NPU brick takes the static shape [${want.join(', ')}]`,
            { hint: 'calibrate with images the processor brings to that size, or keep the brick fp16 (drop the w8a8 --place)' });
        const file = join(dir, `${k}_${inputs[i]!.name}.npy`);
        if (spec.dtype === 'int64') await writeNpyFile(join(outDir, file), { dtype: 'int32', shape: want, data: Int32Array.from(t.data as BigInt64Array, Number) });
        else if (spec.dtype === 'float32') await writeNpyFile(join(outDir, file), { dtype: 'float32', shape: want, data: t.data as Float32Array });
        else throw fail('E_COMPILE_CALIB', `brick '${brick.name}' input '${spec.name}' of type ${spec.dtype} cannot be written for rknn-toolkit2`);
        files.push(file);
      }
      lines.push(files.join(' '));
    }
  } finally {
    await m.close();
  }
  const list = join(dir, 'dataset.txt');
  await writeFile(join(outDir, list), lines.join('\n') + '\n');
  return { list, files: lines.flatMap((l) => l.split(' ')), samples: lines.length };
}
