/**
 * LLaVA-OneVision's feature packing — Python transformers' LlavaOnevisionModel.pack_image_features — for
 * ONE image, after the vision encoder + projector ran on its base patch and its anyres tiles:
 *
 *   base          the encoder rows of patch 0 (side × side features), first and unchanged
 *   grid          patches 1..n laid on the (rows × cols) tile grid of the best resolution
 *                 (get_anyres_image_grid_shape) → one feature map of (rows·side) × (cols·side)
 *   unpad         the map rows / columns that cover the processor's zero padding are cut (unpad_image)
 *   anyres_max_N  a map bigger than N tiles' worth (ratio = √(h·w / (N·side²)) > 1.1) is scaled to
 *                 (h // ratio) × (w // ratio) by bilinear interpolation (F.interpolate, align_corners=False)
 *   newline       `image_newline` ([hidden]) after every row of the map
 *   result        [side² + h'·(w' + 1), hidden] float32, row-major
 *
 * The map is never materialised: each output row reads the encoder rows it needs (a view through the
 * grid and the unpad offsets), so the packed rows can be written straight into the merge buffer.
 */
import { fail } from '../../../errors.js';
import { pyFloorDiv } from './common.js';
import { selectBestResolution, type Resolution } from './llava-onevision.js';

export interface AnyresPackConfig {
  /** config.json image_grid_pinpoints, [height, width] pairs in pixels. */
  readonly pinpoints: readonly Resolution[];
  /** vision_config.image_size: the pixel side of one tile (and of the base patch). */
  readonly tileSize: number;
  /** Features per tile side: vision_config.image_size / patch_size. */
  readonly side: number;
  /** N of vision_aspect_ratio 'anyres_max_N'. */
  readonly maxNumPatches: number;
}

/** Where the packed map comes from and how big it is, for one image of height × width pixels. */
export interface AnyresGeometry {
  /** Tile grid of the best resolution. */
  readonly rows: number;
  readonly cols: number;
  /** The unpadded window of the full (rows·side) × (cols·side) map: first row / column and size. */
  readonly top: number;
  readonly left: number;
  readonly height: number;
  readonly width: number;
  /** The map after anyres_max interpolation (= height × width when none is needed). */
  readonly outHeight: number;
  readonly outWidth: number;
  /** Packed rows: side² + outHeight · (outWidth + 1). */
  readonly packedRows: number;
}

/** Python's round(x, 7) then int() for x ≥ 0: 23.9999999996 is 24, not 23. */
const intRound7 = (x: number) => Math.trunc(Math.round(x * 1e7) / 1e7);

export function anyresGeometry(imageHeight: number, imageWidth: number, c: AnyresPackConfig): AnyresGeometry {
  const [bh, bw] = selectBestResolution(imageHeight, imageWidth, c.pinpoints);
  const rows = Math.trunc(bh / c.tileSize), cols = Math.trunc(bw / c.tileSize);
  const fullH = rows * c.side, fullW = cols * c.side;
  let top = 0, left = 0, height = fullH, width = fullW;
  // unpad_image: the side that the processor padded loses (padding // 2) at each end.
  if (imageWidth / imageHeight > fullW / fullH) {
    top = Math.trunc((fullH - intRound7(imageHeight * (fullW / imageWidth))) / 2);
    height = fullH - 2 * top;
  } else {
    left = Math.trunc((fullW - intRound7(imageWidth * (fullH / imageHeight))) / 2);
    width = fullW - 2 * left;
  }
  let outHeight = height, outWidth = width;
  const ratio = Math.sqrt((height * width) / (c.maxNumPatches * c.side * c.side));
  if (ratio > 1.1) [outHeight, outWidth] = [pyFloorDiv(height, ratio), pyFloorDiv(width, ratio)];
  return { rows, cols, top, left, height, width, outHeight, outWidth, packedRows: c.side * c.side + outHeight * (outWidth + 1) };
}

/**
 * Source taps of F.interpolate(mode='bilinear', align_corners=False) along one axis, sized by output
 * size (scale = in / out): src = (dst + ½)·scale − ½ clamped at 0, its floor and the next index
 * (clamped at the end), and the weight of the next one.
 */
function taps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w1: Float64Array } {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize), w1 = new Float64Array(outSize);
  for (let d = 0; d < outSize; d++) {
    const src = Math.max((d + 0.5) * scale - 0.5, 0);
    const lo = Math.trunc(src);
    i0[d] = lo;
    i1[d] = lo < inSize - 1 ? lo + 1 : lo;
    w1[d] = src - lo;
  }
  return { i0, i1, w1 };
}

/**
 * Packs one image's encoder rows. `features` is [1 + rows·cols, side², hidden] (base patch first, then the
 * tiles row-major, as the processor cuts them); `newline` is image_newline [hidden]. Writes into `into`
 * when given (its first packedRows·hidden values) and returns the packed rows.
 */
export function packAnyresFeatures(
  features: Float32Array, hidden: number, imageSize: readonly [height: number, width: number], newline: Float32Array,
  c: AnyresPackConfig, into?: Float32Array,
): Float32Array {
  const g = anyresGeometry(imageSize[0], imageSize[1], c);
  const perPatch = c.side * c.side * hidden;
  const patches = 1 + g.rows * g.cols;
  if (features.length !== patches * perPatch)
    throw fail('E_ANYRES_FEATURES', `LLaVA-OneVision image ${imageSize[0]}x${imageSize[1]}: the vision encoder gave ${features.length / hidden} rows, expected ${patches} patches × ${c.side ** 2}`,
      { hint: 'the encoder must run on the base patch and every anyres tile the processor cut (pixel_values [1 + tiles, 3, S, S])' });
  if (newline.length !== hidden)
    throw fail('E_ANYRES_FEATURES', `image_newline has ${newline.length} values, the features ${hidden}`);
  const n = g.packedRows * hidden;
  if (into && into.length < n) throw fail('E_BUFFER_SIZE', `anyres features need ${n} values but the buffer holds ${into.length}`);
  const out = into ? into.subarray(0, n) : new Float32Array(n);
  out.set(features.subarray(0, perPatch));
  // Offset of map position (y, x) of the unpadded window in `features`.
  const at = (y: number, x: number) => {
    const Y = y + g.top, X = x + g.left;
    const tile = 1 + Math.trunc(Y / c.side) * g.cols + Math.trunc(X / c.side);
    return tile * perPatch + ((Y % c.side) * c.side + (X % c.side)) * hidden;
  };
  let o = perPatch;
  if (g.outHeight === g.height && g.outWidth === g.width) {
    for (let y = 0; y < g.height; y++) {
      for (let x = 0; x < g.width; x++, o += hidden) out.set(features.subarray(at(y, x), at(y, x) + hidden), o);
      out.set(newline, o);
      o += hidden;
    }
    return out;
  }
  const ty = taps(g.height, g.outHeight), tx = taps(g.width, g.outWidth);
  for (let y = 0; y < g.outHeight; y++) {
    const wy1 = ty.w1[y]!, wy0 = 1 - wy1;
    for (let x = 0; x < g.outWidth; x++, o += hidden) {
      const wx1 = tx.w1[x]!, wx0 = 1 - wx1;
      const a = at(ty.i0[y]!, tx.i0[x]!), b = at(ty.i0[y]!, tx.i1[x]!), p = at(ty.i1[y]!, tx.i0[x]!), q = at(ty.i1[y]!, tx.i1[x]!);
      for (let k = 0; k < hidden; k++)
        out[o + k] = wy0 * (wx0 * features[a + k]! + wx1 * features[b + k]!) + wy1 * (wx0 * features[p + k]! + wx1 * features[q + k]!);
    }
    out.set(newline, o);
    o += hidden;
  }
  return out;
}
