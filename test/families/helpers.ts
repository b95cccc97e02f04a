/** A temp folder that transformers.js loads local models from (remote loading off), removed after the file's tests. */
import { afterAll, beforeAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env } from '@huggingface/transformers';

export function transformersJsRoot(prefix: string): { readonly dir: () => string } {
  let root = '';
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), prefix));
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = root + '/';
  });
  afterAll(async () => { await rm(root, { recursive: true, force: true }); });
  return { dir: () => root };
}
