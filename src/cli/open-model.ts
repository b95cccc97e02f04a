import type { OpenModelOptions, RuntimeModel } from '../run/model.js';

export interface OpenedModel {
  readonly model: RuntimeModel;
  /** Closes the model and removes the temp brick set a model folder was partitioned into. */
  close(): Promise<void>;
}

const adoptedNotice = (path: string) =>
  `notice: ${path} is a model, not a brick set: partitioned into a temp brick set for this run (run \`nanomind partition\` once to skip this)\n`;

/** A brick set, bundle or model (folder or .onnx) opened for `run` / `chat`, its notices on stderr. */
export async function openRuntimeModel(path: string, opts: OpenModelOptions = {}): Promise<OpenedModel> {
  const { dir, cleanup } = await withRunnableDir(path);
  try {
    const { openModel } = await import('../run/model.js');
    const model = await openModel(dir, opts);
    for (const n of model.notices) process.stderr.write(`notice: ${n}\n`);
    return { model, close: async () => { await model.close(); await cleanup(); } };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** The brick set or bundle to run for `path`, partitioning a model first (with a notice). */
export async function withRunnableDir(path: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const { runnableDir } = await import('../partition/runnable.js');
  const r = await runnableDir(path);
  if (r.adopted) process.stderr.write(adoptedNotice(path));
  return r;
}
