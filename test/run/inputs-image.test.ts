/**
 * Image preprocessing against transformers.js (its ImageProcessor on the same encoded bytes) and
 * against Pillow (the resampler Python transformers uses).
 *
 * Tolerances, measured on this machine (sharp 0.35.5 / libvips 8.18.7, transformers.js 4.3.1, Pillow 12.3):
 *  - no resize needed (32×32 input), any resampler: identical (max abs diff 0) for PNG, JPEG, RGBA, grey,
 *    EXIF-rotated input;
 *  - resampler 'sharp-affine' (transformers.js' own resize), any size: identical;
 *  - resampler 'pillow' (default) vs transformers.js on smooth images, normalised units (1 level =
 *    2/255 ≈ 0.0078): max abs diff 0.04–0.21 when shrinking (mean ≤ 0.07), 0.95 at one corner when
 *    enlarging 20×24 → 32×32 (mean 0.06). transformers.js resizes with libvips' affine, which does not
 *    anti-alias when shrinking and places pixels (s − 1)/2 input pixels off Pillow's; on high-frequency
 *    content the gap reaches ~150 levels, which is why Pillow, not transformers.js, is the reference;
 *  - Pillow port vs Pillow: identical (0 levels) for all six filters, shrinking and enlarging.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import sharp from 'sharp';
import { AutoImageProcessor, ImageProcessor, RawImage, env } from '@huggingface/transformers';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import {
  decodeImage, loadImageProcessorConfig, preprocessDecoded, preprocessImage, type ImageProcessorConfig, type PixelValues,
} from '../../src/run/inputs/image.js';
import { pilResize, type PilResample } from '../../src/run/inputs/pil-resize.js';
import { NanomindError } from '../../src/errors.js';

type Kind = 'smooth' | 'busy';

/** Deterministic RGB test pattern: smooth waves, or (busy) a high-frequency texture that aliases. */
function pattern(w: number, h: number, kind: Kind, seed = 1): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = Math.round(127.5 + 127.5 * Math.sin((x / w) * 6.283 * 1.3 + seed));
      px[i + 1] = Math.round((255 * y) / Math.max(1, h - 1));
      px[i + 2] = kind === 'busy' ? (x * x * 7 + y * 13 + x * y * 3 + seed) % 256 : Math.round(127.5 + 127.5 * Math.cos(((x + y) / (w + h)) * 12.57));
    }
  }
  return px;
}

const encode = (px: Uint8Array, w: number, h: number, channels: 1 | 2 | 3 | 4 = 3) => sharp(px, { raw: { width: w, height: h, channels } });

async function reference(proc: ImageProcessor, bytes: Uint8Array): Promise<Float32Array> {
  const img = await RawImage.fromBlob(new Blob([bytes as Uint8Array<ArrayBuffer>]));
  const out = await proc(img) as { pixel_values: { data: Float32Array; dims: number[] } };
  return out.pixel_values.data;
}

const maxAbsDiff = (a: PixelValues, b: Float32Array) => {
  expect(a.data.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a.data[i] - b[i]));
  return m;
};

let dir: string;
let cfg: ImageProcessorConfig;
let ref: ImageProcessor;
let scratch: string;

beforeAll(async () => {
  dir = (await fixtureDir('llava')).dir;
  cfg = await loadImageProcessorConfig(dir);
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = dirname(dir) + '/';
  ref = await AutoImageProcessor.from_pretrained(basename(dir));
  scratch = await mkdtemp(join(tmpdir(), 'nanomind-img-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
  await cleanupFixtures();
});

describe('preprocessImage vs transformers.js (fixture preprocessor_config.json)', () => {
  it('is identical when no resize is needed: PNG, JPEG, RGBA, grey, grey+alpha, EXIF-rotated', async () => {
    const px = pattern(32, 32, 'busy');
    const rgba = new Uint8Array(32 * 32 * 4).map((_, i) => (i % 4 === 3 ? (i * 7) % 256 : px[Math.floor(i / 4) * 3 + (i % 4)]));
    const grey = px.filter((_, i) => i % 3 === 0);
    const greyAlpha = new Uint8Array(32 * 32 * 2).map((_, i) => (i % 2 ? 255 - (i % 256) : grey[i >> 1]));
    const cases: Record<string, Uint8Array> = {
      png: await encode(px, 32, 32).png().toBuffer(),
      jpeg: await encode(px, 32, 32).jpeg({ quality: 80 }).toBuffer(),
      rgba: await encode(rgba, 32, 32, 4).png().toBuffer(),
      grey: await encode(grey, 32, 32, 1).png().toBuffer(),
      greyAlpha: await encode(greyAlpha, 32, 32, 2).png().toBuffer(),
      // stored 32×32 with "rotate 90° CW" orientation: both sides must apply it
      exif: await encode(px, 32, 32).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
      webp: await encode(px, 32, 32).webp({ lossless: true }).toBuffer(),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      const ours = await preprocessImage(bytes, cfg);
      expect(ours.dims, name).toEqual([1, 3, 32, 32]);
      expect(maxAbsDiff(ours, await reference(ref, bytes)), name).toBe(0);
    }
    // a file path reads the same bytes
    const file = join(scratch, 'a.png');
    await writeFile(file, cases.png);
    expect(maxAbsDiff(await preprocessImage(file, cfg), await reference(ref, cases.png))).toBe(0);
  });

  it('applies the EXIF orientation (rotate 90° clockwise) before anything else', async () => {
    const w = 6, h = 4;
    const px = pattern(w, h, 'busy');
    const img = await decodeImage(await encode(px, w, h).png().withMetadata({ orientation: 6 }).toBuffer());
    expect([img.width, img.height]).toEqual([h, w]);
    // Rotating clockwise puts input (x, y) at output (h − 1 − y, x).
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++)
      expect(img.data[(x * h + (h - 1 - y)) * 3]).toBe(px[(y * w + x) * 3]);
  });

  it("is identical for any size with the 'sharp-affine' resampler (transformers.js' resize)", async () => {
    for (const [w, h] of [[64, 64], [50, 40], [20, 24], [300, 200], [33, 31]]) {
      for (const kind of ['smooth', 'busy'] as const) {
        const bytes = await encode(pattern(w, h, kind), w, h).png().toBuffer();
        const ours = await preprocessImage(bytes, cfg, { resampler: 'sharp-affine' });
        expect(maxAbsDiff(ours, await reference(ref, bytes)), `${w}x${h} ${kind}`).toBe(0);
      }
    }
  });

  it('stays close to transformers.js on smooth images with the default Pillow resampler (measured bounds)', async () => {
    // [w, h, max abs diff, mean abs diff] measured, rounded up. transformers.js' libvips affine maps output
    // pixel x to input x·s (Pillow: (x + ½)·s − ½), a shift of (s − 1)/2 input pixels, and when enlarging
    // it treats the last row / column differently (the 0.95 corner of 20×24); interiors agree better.
    const cases: [number, number, number, number][] = [
      [64, 64, 0.11, 0.04], [50, 40, 0.22, 0.03], [300, 200, 0.19, 0.07], [33, 31, 0.04, 0.004], [40, 36, 0.19, 0.015], [20, 24, 0.95, 0.06],
    ];
    for (const [w, h, maxTol, meanTol] of cases) {
      const bytes = await encode(pattern(w, h, 'smooth'), w, h).png().toBuffer();
      const ours = await preprocessImage(bytes, cfg);
      const theirs = await reference(ref, bytes);
      const mean = ours.data.reduce((s, v, i) => s + Math.abs(v - theirs[i]), 0) / theirs.length;
      expect(maxAbsDiff(ours, theirs), `${w}x${h} max`).toBeLessThanOrEqual(maxTol);
      expect(mean, `${w}x${h} mean`).toBeLessThanOrEqual(meanTol);
    }
  });

  it('lays out channels first and applies rescale + normalise', async () => {
    const px = new Uint8Array(32 * 32 * 3).map((_, i) => [255, 0, 51][i % 3]);
    const { data } = await preprocessImage(await encode(px, 32, 32).png().toBuffer(), cfg);
    expect(data[0]).toBe(1);
    expect(data[1024]).toBe(-1);
    expect(data[2048]).toBe(Math.fround(Math.fround(Math.fround(51 / 255) - 0.5) / 0.5));
    expect(new Set(data.subarray(0, 1024))).toEqual(new Set([1]));
  });
});

describe('shortest_edge, centre crop and CLIP statistics', () => {
  const clip: ImageProcessorConfig = {
    do_resize: true, size: { shortest_edge: 24 }, resample: 3, do_center_crop: true, crop_size: { height: 24, width: 24 },
    do_rescale: true, rescale_factor: 1 / 255, do_normalize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], do_convert_rgb: true,
  };

  it('matches transformers.js within one float32 ulp (numpy rounds mean/std to float32 first)', async () => {
    const proc = new ImageProcessor(clip as never);
    for (const [w, h] of [[48, 64], [64, 40], [24, 30], [100, 100]]) {
      const bytes = await encode(pattern(w, h, 'busy'), w, h).png().toBuffer();
      const ours = await preprocessImage(bytes, clip, { resampler: 'sharp-affine' });
      expect(ours.dims, `${w}x${h}`).toEqual([1, 3, 24, 24]);
      expect(maxAbsDiff(ours, await reference(proc, bytes)), `${w}x${h}`).toBeLessThanOrEqual(4e-7);
    }
  });

  it('keeps the aspect ratio (long side truncated, capped by longest_edge) and pads a crop larger than the image', async () => {
    const img = { data: pattern(30, 20, 'smooth'), width: 30, height: 20, channels: 3 };
    const noNorm = { do_rescale: false, resample: 2 };
    expect((await preprocessDecoded(img, { ...noNorm, size: { shortest_edge: 7 } })).dims).toEqual([1, 3, 7, 10]); // 7·30/20 = 10.5
    expect((await preprocessDecoded(img, { ...noNorm, size: { shortest_edge: 14, longest_edge: 15 } })).dims).toEqual([1, 3, 10, 15]);
    expect((await preprocessDecoded(img, { ...noNorm, size: 10 })).dims).toEqual([1, 3, 10, 15]);
    // No resize, crop 33×23 from 30×20: HF pads ⌈3/2⌉ = 2 columns / rows of zeros before, 1 after.
    const out = await preprocessDecoded(img, { do_resize: false, do_rescale: false, do_center_crop: true, crop_size: { width: 33, height: 23 } });
    const at = (c: number, y: number, x: number) => out.data[c * 33 * 23 + y * 33 + x];
    expect(out.dims).toEqual([1, 3, 23, 33]);
    expect([at(0, 1, 1), at(0, 2, 1), at(0, 1, 2), at(0, 22, 31), at(0, 21, 32)]).toEqual([0, 0, 0, 0, 0]);
    expect(at(0, 2, 2)).toBe(img.data[0]);
    expect(at(2, 21, 31)).toBe(img.data[(19 * 30 + 29) * 3 + 2]);
  });
});

describe('Pillow resampling', () => {
  // Pillow 12.3 `Image.frombytes('L', (7, 5), bytes(range(0, 35*7, 7))).resize(size, f).tobytes()` for the
  // 7×5 ramp below (values 0, 7, 14, … 238 in row-major order).
  const ramp = { data: Uint8Array.from({ length: 35 }, (_, i) => i * 7), width: 7, height: 5, channels: 1 };
  const GOLDEN: [PilResample, number, number, number[]][] = [
    [3, 4, 3, [20, 32, 44, 56, 101, 113, 125, 137, 182, 194, 206, 218]],
    [2, 4, 3, [25, 36, 48, 59, 102, 113, 125, 136, 179, 190, 202, 213]],
    [3, 3, 8, [1, 17, 33, 22, 38, 54, 57, 73, 89, 88, 104, 120, 118, 134, 150, 149, 165, 181, 184, 200, 216, 205, 221, 237]],
    [1, 4, 3, [19, 31, 43, 55, 101, 113, 125, 137, 183, 195, 207, 219]],
    [0, 3, 2, [56, 70, 84, 154, 168, 182]],
    [5, 9, 4, [5, 11, 15, 19, 26, 33, 37, 41, 47, 65, 71, 75, 79, 86, 93, 97, 101, 107, 131, 137, 141, 145, 152, 159, 163, 167,
      173, 191, 197, 201, 205, 212, 219, 223, 227, 233]],
    [4, 3, 3, [29, 46, 64, 102, 119, 137, 176, 193, 211]],
  ];
  it('reproduces Pillow golden outputs exactly (all six filters, shrinking and enlarging)', () => {
    for (const [f, w, h, want] of GOLDEN) expect([...pilResize(ramp, w, h, f).data], `filter ${f} → ${w}x${h}`).toEqual(want);
  });

  const hasPillow = (() => {
    try {
      execFileSync('python3', ['-c', 'import PIL'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  it.skipIf(!hasPillow)('equals live Pillow for every filter, shrinking and enlarging (needs python3 + Pillow)', async () => {
    const cases = [[64, 48, 32, 32], [20, 24, 32, 32], [33, 31, 32, 32], [300, 200, 24, 24], [9, 9, 27, 3]];
    const inputs = cases.map(([w, h]) => pattern(w, h, 'busy', w));
    await Promise.all(inputs.map((px, i) => writeFile(join(scratch, `in${i}.raw`), px)));
    // one interpreter for all cases: resize every input with every filter, raw RGB out
    execFileSync('python3', ['-c', `from PIL import Image
import json, sys
for i, (w, h, ow, oh) in enumerate(json.loads(sys.argv[1])):
    im = Image.frombytes('RGB', (w, h), open(f'{sys.argv[2]}/in{i}.raw', 'rb').read())
    for f in range(6):
        open(f'{sys.argv[2]}/out{i}-{f}.raw', 'wb').write(im.resize((ow, oh), resample=f).tobytes())`, JSON.stringify(cases), scratch]);
    for (const [i, [w, h, ow, oh]] of cases.entries()) {
      for (const f of [0, 1, 2, 3, 4, 5] as PilResample[]) {
        const pil = await readFile(join(scratch, `out${i}-${f}.raw`));
        const ours = pilResize({ data: inputs[i], width: w, height: h, channels: 3 }, ow, oh, f);
        expect(Buffer.from(ours.data).equals(pil), `${w}x${h}→${ow}x${oh} filter ${f}`).toBe(true);
      }
    }
  });
});

describe('errors', () => {
  const codeOf = (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (e instanceof NanomindError ? e.code : String(e)));

  it('reports E_IMAGE for bytes that are not an image, a truncated PNG and a missing file', async () => {
    const png = await encode(pattern(32, 32, 'busy'), 32, 32).png().toBuffer();
    expect(await codeOf(preprocessImage(new TextEncoder().encode('definitely not a picture'), cfg))).toBe('E_IMAGE');
    expect(await codeOf(preprocessImage(png.subarray(0, 60), cfg))).toBe('E_IMAGE');
    expect(await codeOf(preprocessImage(join(scratch, 'missing.png'), cfg))).toBe('E_IMAGE');
    expect(await codeOf(preprocessImage(new Uint8Array(0), cfg))).toBe('E_IMAGE');
  });

  it('reports every bad config field at once as E_PREPROCESSOR', async () => {
    const png = await encode(pattern(32, 32, 'busy'), 32, 32).png().toBuffer();
    const bad = { ...cfg, size: { height: 0, width: 32 }, resample: 9, image_mean: [0.5, 0.5] } as ImageProcessorConfig;
    const err = await preprocessImage(png, bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NanomindError);
    expect((err as NanomindError).code).toBe('E_PREPROCESSOR');
    expect((err as NanomindError).detail.notes).toHaveLength(3);
    const d = await mkdtemp(join(scratch, 'cfg-'));
    await writeFile(join(d, 'preprocessor_config.json'), '{"size": ');
    expect(await codeOf(loadImageProcessorConfig(d))).toBe('E_PREPROCESSOR');
    expect(await codeOf(loadImageProcessorConfig(join(scratch, 'nowhere')))).toBe('E_PREPROCESSOR');
  });
});

