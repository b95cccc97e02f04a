/**
 * Progress of long commands, on stderr (stdout is for results):
 * - on an interactive terminal, one status line redrawn every 100 ms: a spinner, the current stage, the
 *   seconds it has taken and the total so far, and `[done/total]` only when the total is really known
 *   (eval's items) — a stage count that grows as stages start tells nothing;
 * - without a terminal (piped, logged), a line every `heartbeatMs` (5 s) while a stage runs, so long
 *   work shows it is alive; short stages print nothing;
 * - nothing at all with `--json` or in CI (CI logs and tests read stderr).
 */
export interface StageProgress {
  stage(name: string): void;
  stop(): void;
}

export interface ProgressSink {
  write(s: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface ProgressOptions {
  readonly stream?: ProgressSink;
  readonly heartbeatMs?: number;
  readonly redrawMs?: number;
}

const SPINNER = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
const secs = (ms: number): string => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;

/** `total`: the number of steps when it is known in advance (each `stage` call is one), else undefined. */
export function stageProgress(total: number | undefined, quiet = false, o: ProgressOptions = {}): StageProgress {
  const stream = o.stream ?? process.stderr;
  if (quiet || (!o.stream && process.env.CI)) return { stage() {}, stop() {} };
  const started = Date.now();
  let stageStart = started, name = '', done = -1, frame = 0, lastBeat = started;
  const label = () => (total !== undefined ? `[${Math.min(done + 1, total)}/${total}] ` : '') + name;
  let timer: NodeJS.Timeout | undefined;
  if (stream.isTTY) {
    const draw = () => {
      const now = Date.now();
      const line = `${SPINNER[frame++ % SPINNER.length]} ${label()}  ${secs(now - stageStart)} (${secs(now - started)} in all)`;
      const width = (stream.columns ?? 80) - 1;
      stream.write(`\r\x1b[2K${line.length > width ? line.slice(0, width - 1) + '…' : line}`);
    };
    timer = setInterval(draw, o.redrawMs ?? 100);
    return {
      stage(n) { name = n; done++; stageStart = Date.now(); draw(); },
      stop() { clearInterval(timer); stream.write('\r\x1b[2K'); },
    };
  }
  const beat = o.heartbeatMs ?? 5000;
  timer = setInterval(() => {
    const now = Date.now();
    if (name && now - stageStart >= beat && now - lastBeat >= beat) {
      lastBeat = now;
      stream.write(`progress: ${label()}: ${secs(now - stageStart)} (${secs(now - started)} in all)\n`);
    }
  }, Math.min(beat, 1000));
  timer.unref();
  return {
    stage(n) { name = n; done++; stageStart = Date.now(); lastBeat = stageStart; },
    stop() { clearInterval(timer); },
  };
}
