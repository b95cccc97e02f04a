/** Opens the model an eval runs on (a model folder, brick set or bundle; default the embedded model). */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fail } from '../errors.js';
import { runnableDir } from '../partition/runnable.js';
import { openModel, type RuntimeModel } from '../run/model.js';
import type { RuntimeEngine } from '../run/brick-set.js';
import { EMBEDDED_MODEL } from './embedded.js';

export interface EvalModel {
  /** The path as given (resolved), for the report. */
  readonly path: string;
  readonly model: RuntimeModel;
  /** Closes the model and removes what `runnableDir` created. */
  close(): Promise<void>;
}

export async function openEvalModel(model: string | undefined, threads?: number, engine?: RuntimeEngine): Promise<EvalModel> {
  const path = resolve(model ?? EMBEDDED_MODEL);
  if (!(await stat(path).catch(() => undefined)))
    throw fail('E_EVAL_MODEL', `${path}: no such model`, { hint: model ? 'pass a model folder, brick set or bundle' : 'this build has no embedded model yet; pass a model path' });
  const runnable = await runnableDir(path);
  try {
    const m = await openModel(runnable.dir, { threads, engine });
    return { path, model: m, close: async () => { try { await m.close(); } finally { await runnable.cleanup(); } } };
  } catch (e) {
    await runnable.cleanup();
    throw e;
  }
}
