/**
 * Temp folders a command creates (`nanomind-*` in the temp dir, `.out.tmp-*` beside an output) are
 * removed on success and failure by their owner's `finally`, and on Ctrl-C / SIGTERM here: a signal
 * ends the process without running `finally` blocks, so every such folder is registered while it lives
 * and the handler removes what is still registered, then exits with the signal's conventional code.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const live = new Set<string>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const)
    process.once(sig, () => {
      for (const d of live) rmSync(d, { recursive: true, force: true });
      process.exit(code);
    });
}

/** Registers `dir` for removal if the process is interrupted; returns it. */
export function trackTemp(dir: string): string {
  install();
  live.add(dir);
  return dir;
}

/** Forgets `dir` (it was renamed into place or handed over). */
export function forgetTemp(dir: string): void {
  live.delete(dir);
}

/** Removes `dir` and forgets it. */
export async function removeTemp(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  live.delete(dir);
}

/** A fresh `nanomind-<what>-XXXXXX` folder in the temp dir, removed on Ctrl-C unless removed before. */
export async function makeTemp(what: string): Promise<string> {
  return trackTemp(await mkdtemp(join(tmpdir(), `nanomind-${what}-`)));
}
