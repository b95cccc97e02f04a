/**
 * Stage progress for long commands: a cli-progress bar on an interactive terminal, nothing in CI or
 * when output is piped or `--json` is set (scripts read stdout; the bar goes to stderr anyway).
 */
import cliProgress from 'cli-progress';

export interface StageProgress {
  stage(name: string): void;
  stop(): void;
}

export function stageProgress(total: number, quiet = false): StageProgress {
  const enabled = !quiet && process.stderr.isTTY && !process.env.CI;
  if (!enabled) return { stage() {}, stop() {} };
  const bar = new cliProgress.SingleBar({
    stream: process.stderr, format: ' {bar} {value}/{total} {stage}', hideCursor: true, clearOnComplete: true,
  }, cliProgress.Presets.shades_classic);
  let done = 0;
  bar.start(total, 0, { stage: '' });
  return {
    stage(name) { bar.setTotal(Math.max(total, done + 1)); bar.update(done++, { stage: name }); },
    stop() { bar.stop(); },
  };
}
