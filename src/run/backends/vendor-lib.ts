/**
 * Loading a vendor runtime library (librknnrt.so, librkllmrt.so) through koffi: a missing or broken library
 * is one E_NPU_LIBRARY line naming it and where it comes from, never a koffi stack.
 */
import koffi from 'koffi';
import { fail } from '../../errors.js';

export function loadVendorLibrary(path: string, what: string, hint: string): ReturnType<typeof koffi.load> {
  try {
    return koffi.load(path);
  } catch (e) {
    throw fail('E_NPU_LIBRARY', `${path} (${what}) does not load: ${(e as Error).message.split('\n')[0]}`, { hint });
  }
}
