/**
 * The rule for preprocessor_config.json keys a processor does not honour. A key that would change the
 * output (tiling, cropping, padding, pixel budgets…) set to anything but off is an error: silently
 * ignoring it would feed the model a different image than Hugging Face's processor would. Any other
 * unread key is returned as a notice for the caller to print.
 */
import { fail } from '../../../errors.js';

/** Keys that change what a processor outputs. */
const OUTPUT_CHANGING = [
  'do_image_splitting', 'do_pan_and_scan', 'image_grid_pinpoints', 'do_center_crop', 'min_pixels', 'max_pixels',
  'patch_size', 'merge_size', 'temporal_patch_size', 'max_image_size', 'do_pad', 'pad_size', 'size_divisor',
  'size_divisibility', 'do_crop_margin', 'do_thumbnail', 'do_flip_channel_order', 'keep_aspect_ratio',
  'ensure_multiple_of', 'do_convert_grayscale',
];
/** Keys that only name things (no effect on the pixels). */
const INERT = ['image_processor_type', 'processor_class', 'feature_extractor_type', 'auto_map', 'do_convert_rgb', '_valid_processor_keys'];

/**
 * Applies the key rule: unsupported output-changing keys → E_PREPROCESSOR_UNSUPPORTED (all listed);
 * other keys the family does not read → returned as notices for the caller to print.
 */
export function checkKeys(cfg: Readonly<Record<string, unknown>>, where: string, family: string, reads: readonly string[]): string[] {
  const unsupported: string[] = [], notices: string[] = [];
  for (const [k, v] of Object.entries(cfg)) {
    if (reads.includes(k) || INERT.includes(k)) continue;
    if (OUTPUT_CHANGING.includes(k)) {
      if (v !== false && v !== null) unsupported.push(`${k} = ${JSON.stringify(v)}: the ${family} processor does not implement it`);
    } else notices.push(`${where}: "${k}" is not used by the ${family} image processor`);
  }
  if (unsupported.length)
    throw fail('E_PREPROCESSOR_UNSUPPORTED', `${where}: ${unsupported.length} setting(s) the ${family} image processor does not support`, {
      file: where, notes: unsupported, hint: 'remove the setting or set it to false if the model does not need it',
    });
  return notices;
}
