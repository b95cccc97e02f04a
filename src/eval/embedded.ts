/** Where the embedded trained model and its held-out set live inside the installed package. */
import { fileURLToPath } from 'node:url';

/** `models/shapes-vlm/` at the package root (dist/eval/ → ../../models). */
export const EMBEDDED_MODEL = fileURLToPath(new URL('../../models/shapes-vlm/', import.meta.url));
export const EMBEDDED_EVAL_SET = fileURLToPath(new URL('../../models/shapes-vlm/eval/', import.meta.url));
/** A few questions of other scenes and voices, for `nanomind quantize --calib builtin`. */
export const EMBEDDED_CALIB_SET = fileURLToPath(new URL('../../models/shapes-vlm/calib/', import.meta.url));
