import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fail } from '../errors.js';

/**
 * The compiled file of a worker thread started from the module at `callerUrl`: `beside` it in dist/,
 * or `fromSource` when the caller runs as TypeScript (vitest), since Node 20 worker threads cannot load
 * TypeScript. Both paths are relative to the caller.
 */
export function compiledWorker(callerUrl: string, beside: string, fromSource: string, what: string): URL {
  const url = new URL(callerUrl.endsWith('.ts') ? fromSource : beside, callerUrl);
  if (!existsSync(fileURLToPath(url)))
    throw fail('E_WORKER', `the ${what} ${fileURLToPath(url)} is missing`, { hint: 'build nanomind first (npm run build)' });
  return url;
}
