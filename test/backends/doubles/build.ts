/** Compiles a contract double (a C file beside this one) with the system `cc` into a fresh temp dir. */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface Double { readonly dir: string; readonly lib: string; readonly log: string; lines(): Promise<string[]> }

export async function buildDouble(name: 'rknn' | 'rkllm'): Promise<Double> {
  const dir = await mkdtemp(join(tmpdir(), `nanomind-${name}-double-`));
  const lib = join(dir, `lib${name}-double.so`);
  await promisify(execFile)('cc', ['-shared', '-fPIC', '-Wall', '-Werror', '-O1', '-o', lib, join(import.meta.dirname, `${name}-double.c`), '-lm']);
  const log = join(dir, 'calls.log');
  return { dir, lib, log, lines: async () => (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean) };
}
