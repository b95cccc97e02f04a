/** Stage progress: heartbeat lines without a terminal, a redrawn status line with one; counts only when known. */
import { describe, expect, it } from 'vitest';
import { stageProgress, type ProgressSink } from '../../src/cli/progress.js';

const sink = (isTTY: boolean): ProgressSink & { text: string } => {
  const s = { text: '', isTTY, columns: 60, write(x: string) { s.text += x; return true; } };
  return s;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stage progress', () => {
  it('without a terminal: a line while a long stage runs, none for a short one', async () => {
    const s = sink(false);
    const p = stageProgress(undefined, false, { stream: s, heartbeatMs: 40 });
    p.stage('quick');
    await sleep(10);
    p.stage('slow step');
    await sleep(1300); // the heartbeat is checked every min(heartbeat, 1 s)
    p.stop();
    const lines = s.text.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(1);
    for (const l of lines) expect(l).toMatch(/^progress: slow step: \d+\.\d s \(\d+\.\d s in all\)$/);
  });

  it('on a terminal: spinner, stage and elapsed time; [n/total] only with a known total; fits the width', async () => {
    const s = sink(true);
    const p = stageProgress(undefined, false, { stream: s, redrawMs: 10 });
    p.stage('verify the bricks against the original model, which takes a while on big decoders');
    await sleep(50);
    p.stop();
    const frames = s.text.split('\r\x1b[2K').filter(Boolean);
    expect(frames.length).toBeGreaterThan(1);
    for (const f of frames) { expect(f).not.toMatch(/\d+\/\d+/); expect(f.length).toBeLessThanOrEqual(59); }
    expect(frames[0]).toMatch(/^. verify the bricks/);
    const k = sink(true);
    const q = stageProgress(3, false, { stream: k, redrawMs: 1000 });
    q.stage('a'); q.stage('b'); q.stop();
    expect(k.text).toContain('[2/3] b');
  });

  it('quiet (--json) writes nothing', async () => {
    const s = sink(true);
    const p = stageProgress(undefined, true, { stream: s, redrawMs: 5 });
    p.stage('x');
    await sleep(20);
    p.stop();
    expect(s.text).toBe('');
  });
});
