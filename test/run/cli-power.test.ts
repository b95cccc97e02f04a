/**
 * `nanomind run --images` under the power policy through the real CLI (dist/): a fake power-supply
 * folder (--power-supply) at 5 % gives the critical cascade, reported in --json and logged once on
 * stderr; no folder with a battery gives unconstrained. The oracle for the answers is the same stream
 * with --no-overlap (sequential, no worker).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from './helpers.js';
import { cli } from '../cli-helper.js';

afterAll(async () => { await cleanupFixtures(); });

describe('nanomind run --images --power-supply', () => {
  it('a battery at 5 %: critical cascade in --json, one transition line on stderr, the same answers', async () => {
    const root = await fixtureRoot();
    const files: string[] = [];
    for (const [i, c] of [[200, 0, 0], [0, 0, 200]].entries()) {
      const f = join(root, `cli-power-${i}.png`);
      await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: c[0], g: c[1], b: c[2] } } }).png().toFile(f);
      files.push(f);
    }
    const low = join(root, 'cli-power', 'low');
    await mkdir(join(low, 'BAT0'), { recursive: true });
    for (const [k, v] of [['type', 'Battery'], ['capacity', '5'], ['status', 'Discharging']]) await writeFile(join(low, 'BAT0', k!), `${v}\n`);
    const none = join(root, 'cli-power', 'none');
    await mkdir(none, { recursive: true });
    const dir = await brickSetDir('llava');
    const args = ['run', dir, '--prompt', 'colour?', '--images', ...files, '--max-tokens', '4', '--json'];
    const crit = await cli(...args, '--power-supply', low);
    expect(crit.code).toBe(0);
    const c = JSON.parse(crit.stdout);
    expect(c.power).toMatchObject({ state: 'critical', alpha: 0, workersStarted: 0, thresholds: { highPercent: 50, lowPercent: 15 },
      transitions: [{ from: 'unconstrained', to: 'critical', batteryPercent: 5 }] });
    expect(c.answers.map((a: { mode: string }) => a.mode)).toEqual(['cascade', 'cascade']);
    expect(crit.stderr.split('\n').filter((l) => l.startsWith('power: '))).toHaveLength(1);
    const free = JSON.parse((await cli(...args, '--power-supply', none)).stdout);
    expect(free.power).toMatchObject({ state: 'unconstrained', batteryPercent: null, transitions: [] });
    expect(free.answers.map((a: { mode: string }) => a.mode)).toEqual(['pipeline', 'pipeline']);
    const seq = JSON.parse((await cli(...args, '--power-supply', none, '--no-overlap')).stdout);
    for (const r of [c, free]) expect(r.answers.map((a: { tokens: number[] }) => a.tokens)).toEqual(seq.answers.map((a: { tokens: number[] }) => a.tokens));
    expect(c.handoff.copiesPerRequest).toBeGreaterThanOrEqual(1);
    // bench runs its image stream under the same policy and reports it.
    const b = await cli('bench', dir, '--runs', '1', '--new-tokens', '2', '--prompt-tokens', '4', '--stream-images', '2', '--power-supply', low, '--json');
    expect(b.code).toBe(0);
    expect(JSON.parse(b.stdout).power).toMatchObject({ state: 'critical', transitions: [{ to: 'critical', batteryPercent: 5 }] });
  }, 90_000);
});
