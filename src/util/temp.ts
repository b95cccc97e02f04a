/**
 * Temp folders a command creates (`nanomind-*` in the temp dir, `.OUT.tmp-*` beside an output) are
 * removed on success and failure by their owner's `finally`, and on Ctrl-C / SIGTERM here: a signal
 * ends the process without running `finally` blocks, so every such folder is registered while it
 * lives. The signal handlers are installed only while something is registered; on a signal they remove
 * what is registered, then exit with the conventional code (130 / 143) — unless the program has its own
 * handler for that signal (a server shutting down gracefully): then nothing is removed here, the program
 * finishes what it is doing and its own `finally` removes its folders.
 */
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const live = new Set<string>();
const SIGNALS = [['SIGINT', 130], ['SIGTERM', 143]] as const;
const handlers = new Map<NodeJS.Signals, () => void>();

function onSignal(sig: NodeJS.Signals, code: number): void {
  // A program with its own handler (a server stopping gracefully) is still using its folders — a running
  // answer may open another brick — and removes them in its own `finally` (or they go at exit, onExit).
  if (process.listenerCount(sig) > 1) return;
  for (const d of live) rmSync(d, { recursive: true, force: true });
  live.clear();
  uninstall();
  process.exit(code);
}

/** Whatever is still registered when the process exits (a signal handler's process.exit included) goes. */
function onExit(): void {
  for (const d of live) rmSync(d, { recursive: true, force: true });
  live.clear();
}

function install(): void {
  if (handlers.size) return;
  for (const [sig, code] of SIGNALS) {
    const h = () => onSignal(sig, code);
    handlers.set(sig, h);
    process.on(sig, h);
  }
  process.on('exit', onExit);
}

function uninstall(): void {
  for (const [sig, h] of handlers) process.off(sig, h);
  handlers.clear();
  process.off('exit', onExit);
}

/** Registers `dir` for removal if the process is interrupted; returns it. */
export function trackTemp(dir: string): string {
  live.add(dir);
  install();
  return dir;
}

/** Forgets `dir` (it was renamed into place or handed over). */
export function forgetTemp(dir: string): void {
  live.delete(dir);
  if (!live.size) uninstall();
}

/** Removes `dir` and forgets it. */
export async function removeTemp(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  forgetTemp(dir);
}

/**
 * A fresh `nanomind-<what>-XXXXXX` folder in the temp dir, removed on Ctrl-C unless removed before. The name
 * is registered before the folder is made, so a signal arriving in between cannot leave it behind.
 */
export async function makeTemp(what: string): Promise<string> {
  for (;;) {
    const dir = trackTemp(join(tmpdir(), `nanomind-${what}-${randomBytes(6).toString('base64url')}`));
    try {
      await mkdir(dir, { mode: 0o700 });
      return dir;
    } catch (e) {
      forgetTemp(dir);
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}
