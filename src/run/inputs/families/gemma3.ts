/**
 * Gemma 3 (`Gemma3ImageProcessor`, `Gemma3Processor`; SigLIP at 896 × 896).
 *
 * Pixels: resize to size {height, width} (896 × 896, aspect not kept; resample default bilinear),
 * rescale, normalise ([0.5]·3) → pixel_values [1, 3, S, S]; several images stack to [n, 3, S, S].
 * Pan-and-scan (`do_pan_and_scan`, extra crops of wide / tall images) is off by default in Python and
 * not implemented by transformers.js 4.3.1 (its Gemma3ImageProcessor is the plain one), so it is not
 * implemented here: a config that turns it on is refused (E_PREPROCESSOR_UNSUPPORTED).
 *
 * Prompt: every `<start_of_image>` (boi_token) becomes
 *   "\n\n<start_of_image>" + `<image_soft_token>`·N + "<end_of_image>\n\n"
 * with N = image_seq_length (processor_config.json, else config.json mm_tokens_per_image, else 256) and
 * the three token strings from tokenizer_config.json (boi_token, image_token, eoi_token) when it names them.
 */
import { fail } from '../../../errors.js';
import { checkImageProcessorConfig, resizeImage } from '../image.js';
import { ConfigReader, HALF, cat0, f32, toChw } from './common.js';
import type { FamilyConfigs, FamilyImageProcessor, ImageFamily, ProcessedImage } from './types.js';

export const gemma3Family: ImageFamily = {
  id: 'gemma3',
  imageProcessorTypes: ['Gemma3ImageProcessor', 'Gemma3ImageProcessorFast'],
  modelTypes: ['gemma3'],
  reads: ['size', 'resample', 'do_resize', 'do_rescale', 'rescale_factor', 'do_normalize', 'image_mean', 'image_std',
    'do_pan_and_scan', 'pan_and_scan_max_num_crops', 'pan_and_scan_min_crop_size', 'pan_and_scan_min_ratio_to_activate', 'image_seq_length'],
  create(c: FamilyConfigs): FamilyImageProcessor {
    const r = new ConfigReader(c.preprocessor, c.where);
    const cfg = c.preprocessor;
    const size = (cfg.size ?? { height: 896, width: 896 }) as Record<string, unknown>;
    const H = r.posInt('size.height', size.height), W = r.posInt('size.width', size.width);
    const resample = r.resample(2);
    const doResize = r.bool('do_resize', true);
    const norm = r.norm({ mean: HALF, std: HALF, normalize: true });
    const panAndScan = r.bool('do_pan_and_scan', false);
    const tokensPerImage = r.posInt('image_seq_length', c.processor.image_seq_length ?? cfg.image_seq_length ?? c.model.mm_tokens_per_image, 256);
    r.done('Gemma 3');
    if (panAndScan)
      throw fail('E_PREPROCESSOR_UNSUPPORTED', `${c.where}: do_pan_and_scan = true: Gemma 3 pan-and-scan crops are not implemented`, {
        file: c.where, hint: 'set do_pan_and_scan to false (the default of google/gemma-3 configs)',
      });
    checkImageProcessorConfig(norm, c.where);
    const tok = (k: string, d: string) => (typeof c.tokenizer[k] === 'string' ? (c.tokenizer[k] as string) : d);
    const boi = tok('boi_token', '<start_of_image>'), image = tok('image_token', '<image_soft_token>'), eoi = tok('eoi_token', '<end_of_image>');
    const expansion = `\n\n${boi}${image.repeat(tokensPerImage)}${eoi}\n\n`;
    return {
      family: 'gemma3',
      placeholder: boi,
      async process(img, opts = {}) {
        const sized = doResize ? await resizeImage(img, W, H, resample, opts.resampler) : img;
        return {
          tensors: { pixel_values: f32(await toChw(sized, norm), [1, 3, sized.height, sized.width]) },
          tokens: tokensPerImage,
          expansion,
        };
      },
      batch: (images: readonly ProcessedImage[]) => ({ pixel_values: cat0(images.map((i) => i.tensors.pixel_values)) }),
    };
  },
};
