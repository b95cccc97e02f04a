/**
 * A live `serve` on the embedded model (127.0.0.1, a free port) for the API tests, and the held-out
 * questions whose expected answer PyTorch also gives (models/shapes-vlm/eval/reference.json, written
 * by tools/shapes-vlm/export.py): the oracle the served answers are compared with.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EMBEDDED_EVAL_SET, EMBEDDED_MODEL } from '../../src/eval/embedded.js';
import { runnableDir } from '../../src/partition/runnable.js';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { startServer, type RunningServer, type ServeOptions } from '../../src/serve/server.js';

export const MODEL_ID = 'shapes-vlm';

export interface EvalRow {
  readonly id: string; readonly image: string; readonly question: string; readonly answer: string;
  readonly modality: 'typed' | 'spoken'; readonly audio?: string;
}

/** Held-out rows where PyTorch's greedy answer equals the expected one; `pytorch` is that answer. */
export async function agreedRows(): Promise<(EvalRow & { pytorch: string })[]> {
  const reference = JSON.parse(await readFile(join(EMBEDDED_EVAL_SET, 'reference.json'), 'utf8')).answers as Record<string, string>;
  return (await readFile(join(EMBEDDED_EVAL_SET, 'eval.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as EvalRow)
    .map((r) => ({ ...r, pytorch: reference[r.id]! })).filter((r) => r.pytorch === r.answer);
}

export const evalFile = (rel: string): Promise<Buffer> => readFile(join(EMBEDDED_EVAL_SET, rel));
export const dataUrl = (png: Uint8Array): string => `data:image/png;base64,${Buffer.from(png).toString('base64')}`;

export interface Live {
  readonly server: RunningServer;
  readonly model: RuntimeModel;
  readonly url: string;
  close(): Promise<void>;
}

/** The embedded model partitioned to a temp brick set, opened, and served on a random loopback port. */
export async function serveEmbedded(o: Partial<ServeOptions> = {}): Promise<Live> {
  const runnable = await runnableDir(EMBEDDED_MODEL);
  const model = await openModel(runnable.dir);
  const server = await startServer(model, { modelId: MODEL_ID, port: 0, version: '0.1.0', ...o });
  return {
    server, model, url: server.url,
    async close() { await server.close(1000); await model.close(); await runnable.cleanup(); },
  };
}

/** One Prometheus sample's value (0 when absent). */
export async function metric(url: string, sample: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers })).text();
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

/** Polls until `check` holds (or fails the test after `ms`). */
export async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
