/**
 * Pillow's `Image.resize` for 8-bit images, ported from Pillow's src/libImaging/Resample.c so images
 * reach the vision encoder resampled the way Hugging Face's (PIL-based) image processors resample them.
 *
 * Why not sharp: measured against Pillow 12.3 on 32×32 targets, libvips' `resize` is close when
 * shrinking (≤ 12 levels, mean < 1) but off by up to 143 levels when enlarging (it aligns pixels
 * differently), and `affine` — what transformers.js calls — skips the anti-alias filter when shrinking
 * (up to 153 levels off). This port matches Pillow to the level (see test/run/inputs-image.test.ts).
 *
 * The algorithm: a separable convolution, horizontal pass then vertical pass, each output pixel a
 * weighted sum of the input pixels within `support × max(scale, 1)` of its centre (so shrinking filters
 * out what would alias). Weights are normalised per pixel, turned into 22-bit fixed point and summed
 * with rounding, and each pass clips to 0..255 — those roundings are part of what is matched.
 * NEAREST is Pillow's affine nearest-neighbour: input pixel ⌊(x + 0.5) · in / out⌋.
 */

/** PIL resample codes, as `resample` in preprocessor_config.json. */
export const PIL_RESAMPLE = { nearest: 0, lanczos: 1, bilinear: 2, bicubic: 3, box: 4, hamming: 5 } as const;
export type PilResample = (typeof PIL_RESAMPLE)[keyof typeof PIL_RESAMPLE];

interface Filter {
  readonly support: number;
  weight(x: number): number;
}

const sinc = (x: number) => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));

// Pillow's filters, same constants (bicubic a = -0.5, lanczos a = 3).
const FILTERS: Record<Exclude<PilResample, 0>, Filter> = {
  1: { support: 3, weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  2: { support: 1, weight: (x) => Math.max(0, 1 - Math.abs(x)) },
  3: {
    support: 2,
    weight(x) {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  4: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  5: {
    support: 1,
    weight(x) {
      x = Math.abs(x);
      if (x === 0) return 1;
      if (x >= 1) return 0;
      const px = x * Math.PI;
      return (Math.sin(px) / px) * (0.54 + 0.46 * Math.cos(px));
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;

interface Coeffs {
  readonly ksize: number;
  readonly bounds: Int32Array; // [xmin, count] per output pixel
  readonly kk: Int32Array; // fixed-point weights, ksize per output pixel
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc. */
function coefficients(inSize: number, outSize: number, filter: Filter): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    // C casts (int) truncate toward zero; the clamps make that equal to Pillow's result.
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) ww += w[x] = filter.weight((x + xmin - center + 0.5) * ss);
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

const clip8 = (v: number) => (v >= 255 << PRECISION_BITS ? 255 : v <= 0 ? 0 : v >> PRECISION_BITS);

/** An interleaved 8-bit image (`channels` values per pixel, row-major). */
export interface Image8 {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: number;
}

function horizontal(src: Image8, rowStart: number, rows: number, outW: number, c: Coeffs): Image8 {
  const { channels: ch, width: inW } = src;
  const out = new Uint8Array(outW * rows * ch);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const inRow = (y + rowStart) * inW * ch;
    const outRow = y * outW * ch;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.bounds[xx * 2], n = c.bounds[xx * 2 + 1], k0 = xx * c.ksize;
      for (let b = 0; b < ch; b++) {
        let ss = half;
        for (let x = 0; x < n; x++) ss += src.data[inRow + (x + xmin) * ch + b] * c.kk[k0 + x];
        out[outRow + xx * ch + b] = clip8(ss);
      }
    }
  }
  return { data: out, width: outW, height: rows, channels: ch };
}

function vertical(src: Image8, outH: number, c: Coeffs, shift: number): Image8 {
  const { channels: ch, width: w } = src;
  const rowLen = w * ch;
  const out = new Uint8Array(outH * rowLen);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.bounds[yy * 2] - shift, n = c.bounds[yy * 2 + 1], k0 = yy * c.ksize;
    for (let i = 0; i < rowLen; i++) {
      let ss = half;
      for (let y = 0; y < n; y++) ss += src.data[(y + ymin) * rowLen + i] * c.kk[k0 + y];
      out[yy * rowLen + i] = clip8(ss);
    }
  }
  return { data: out, width: w, height: outH, channels: ch };
}

function nearest(src: Image8, outW: number, outH: number): Image8 {
  const { channels: ch } = src;
  const out = new Uint8Array(outW * outH * ch);
  // Pillow's ImagingScaleAffine steps the source position by repeated addition, not multiplication;
  // the two round differently at exact pixel boundaries, so the sum is kept.
  const sx = src.width / outW, sy = src.height / outH;
  const xin = new Int32Array(outW);
  for (let x = 0, xo = sx * 0.5; x < outW; x++, xo += sx) xin[x] = Math.min(src.width - 1, Math.trunc(xo));
  for (let y = 0, yo = sy * 0.5; y < outH; y++, yo += sy) {
    const iy = Math.min(src.height - 1, Math.trunc(yo));
    for (let x = 0; x < outW; x++)
      for (let b = 0; b < ch; b++) out[(y * outW + x) * ch + b] = src.data[(iy * src.width + xin[x]) * ch + b];
  }
  return { data: out, width: outW, height: outH, channels: ch };
}

/** Resizes like Pillow's `Image.resize((outW, outH), resample)` (no box, no reducing_gap). */
export function pilResize(src: Image8, outW: number, outH: number, resample: PilResample): Image8 {
  if (!(outW >= 1 && outH >= 1)) throw new RangeError(`resize target ${outW}x${outH} is empty`);
  if (src.width === outW && src.height === outH) return src;
  if (resample === 0) return nearest(src, outW, outH);
  const filter = FILTERS[resample];
  const needH = outW !== src.width, needV = outH !== src.height;
  const cv = coefficients(src.height, outH, filter);
  // The horizontal pass only computes the rows the vertical pass will read.
  const first = needV ? cv.bounds[0] : 0;
  const last = needV ? cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1] : src.height;
  let img = src;
  let shift = 0;
  if (needH) {
    img = horizontal(src, first, last - first, outW, coefficients(src.width, outW, filter));
    shift = first;
  }
  return needV ? vertical(img, outH, cv, shift) : img;
}
