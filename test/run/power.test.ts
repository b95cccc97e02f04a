/**
 * The battery-aware policy: sysfs power-supply folders read as the kernel lays them out, the three
 * states with α and hysteresis (oracle: the paper's formula recomputed here in float64), and one image
 * stream driven through all three states by a fake power-supply folder whose capacity changes between
 * images. The answers' oracle is the same stream run without a policy (itself checked against the
 * main-thread vision brick in pipeline.test.ts).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { runImageStream } from '../../src/run/run.js';
import { readBattery } from '../../src/run/power/battery.js';
import { PowerPolicy, powerMonitor, thresholdsFrom, transitionLine } from '../../src/run/power/policy.js';
import { liveEncoderWorkers } from '../../src/run/workers/encoder-client.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from './helpers.js';

async function supplyDir(name: string, supplies: Record<string, Record<string, string>>): Promise<string> {
  const dir = join(await fixtureRoot(), 'power', name);
  for (const [s, files] of Object.entries(supplies)) {
    await mkdir(join(dir, s), { recursive: true });
    for (const [f, v] of Object.entries(files)) await writeFile(join(dir, s, f), `${v}\n`);
  }
  return dir;
}

afterAll(async () => { await cleanupFixtures(); });

describe('readBattery', () => {
  it('reads capacity and status, sees mains, and reports no battery as such', async () => {
    const bat = await supplyDir('discharging', { AC: { type: 'Mains', online: '0' }, BAT0: { type: 'Battery', capacity: '42', status: 'Discharging' } });
    expect(await readBattery(bat)).toMatchObject({ percent: 42, onMains: false, status: 'Discharging', supplies: ['AC:Mains', 'BAT0:Battery'] });
    const ac = await supplyDir('on-ac', { AC: { type: 'Mains', online: '1' }, BAT0: { type: 'Battery', capacity: '9', status: 'Not charging' } });
    expect(await readBattery(ac)).toMatchObject({ percent: 9, onMains: true });
    const charging = await supplyDir('charging', { BAT1: { type: 'Battery', capacity: '30', status: 'Charging' } });
    expect((await readBattery(charging)).onMains).toBe(true);
    const none = await supplyDir('desktop', { ucsi: { type: 'USB', online: '0' } });
    expect(await readBattery(none)).toMatchObject({ percent: null, onMains: false });
  });

  it('refuses a capacity that is not a percentage and a folder that does not exist (E_POWER_SUPPLY)', async () => {
    const bad = await supplyDir('bad', { BAT0: { type: 'Battery', capacity: 'lots', status: 'Discharging' } });
    await expect(readBattery(bad)).rejects.toMatchObject({ code: 'E_POWER_SUPPLY' });
    await expect(readBattery(join(await fixtureRoot(), 'power', 'missing'))).rejects.toMatchObject({ code: 'E_POWER_SUPPLY' });
  });
});

describe('PowerPolicy', () => {
  const reading = (percent: number | null, onMains = false) => ({ percent, onMains, status: 'Discharging', supplies: [] });

  it('unconstrained above T_high, α = (B − T_low)/(T_high − T_low) between, critical at or below T_low; mains is unconstrained', () => {
    const p = new PowerPolicy(thresholdsFrom({ highPercent: 60, lowPercent: 20 } as never));
    p.update(reading(80));
    expect([p.state, p.alpha]).toEqual(['unconstrained', 1]);
    for (const b of [60, 45, 21]) {
      p.update(reading(b));
      expect(p.state).toBe('proportional');
      expect(p.alpha).toBeCloseTo((b - 20) / (60 - 20), 12);
    }
    p.update(reading(20));
    expect([p.state, p.alpha]).toEqual(['critical', 0]);
    p.update(reading(5, true));
    expect(p.state).toBe('unconstrained');
    expect(p.report().transitions.map((t) => `${t.from}>${t.to}`)).toEqual(['unconstrained>proportional', 'proportional>critical', 'critical>unconstrained']);
  });

  it('does not flap at a threshold: going up needs the hysteresis margin', () => {
    const p = new PowerPolicy({ highPercent: 50, lowPercent: 15, hysteresisPercent: 2 });
    for (const b of [15, 16, 17, 15, 16]) p.update(reading(b));
    expect(p.state).toBe('critical');
    p.update(reading(18));
    expect(p.state).toBe('proportional');
    for (const b of [51, 52, 50, 51]) p.update(reading(b));
    expect(p.state).toBe('proportional');
    p.update(reading(53));
    expect(p.state).toBe('unconstrained');
    expect(p.report().transitions).toHaveLength(3);
  });

  it('refuses thresholds that are not 0 ≤ low < high ≤ 100 (E_POWER_POLICY)', () => {
    expect(() => thresholdsFrom({ highPercent: 10, lowPercent: 30 } as never)).toThrow(expect.objectContaining({ code: 'E_POWER_POLICY' }));
  });
});

describe('runImageStream under the power policy', () => {
  let m: RuntimeModel;
  const images: string[] = [];
  beforeAll(async () => {
    m = await openModel(await brickSetDir('llava'));
    const root = await fixtureRoot();
    for (let i = 0; i < 6; i++) {
      const px = Buffer.alloc(32 * 32 * 3);
      for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) + 40 * i) & 255;
      const f = join(root, `power-${i}.png`);
      await sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(f);
      images.push(f);
    }
  });
  afterAll(async () => { await m?.close(); });

  it('goes unconstrained → proportional → critical (cascade, encoders released) → unconstrained during one stream, answers unchanged', async () => {
    const opts = { maxNewTokens: 4, sampling: { temperature: 0 }, encoderThreads: 1, decoderThreads: 2 } as const;
    const base = await runImageStream(m, images, 'What is it?', opts);
    // Battery before each image; 16 is above T_low = 15 but within the 2-point hysteresis, so it stays critical.
    const battery = [90, 90, 40, 10, 16, 80];
    const dir = await supplyDir('stream', { BAT0: { type: 'Battery', capacity: String(battery[0]), status: 'Discharging' } });
    const lines: string[] = [];
    const power = powerMonitor({ dir, thresholds: { highPercent: 50, lowPercent: 15 }, onTransition: (t) => lines.push(transitionLine(t)) });
    const encoders = m.set.encoder('vision').chain.map((b) => b.name);
    const seen: { open: string[]; workers: number }[] = [];
    const r = await runImageStream(m, images, 'What is it?', {
      ...opts, power,
      onAnswer: (i) => {
        seen.push({ open: m.set.openBricks(), workers: liveEncoderWorkers() });
        if (i + 1 < battery.length) writeFileSync(join(dir, 'BAT0', 'capacity'), `${battery[i + 1]}\n`);
      },
    });
    expect(r.answers.map((a) => a.mode)).toEqual(['pipeline', 'pipeline', 'pipeline', 'cascade', 'cascade', 'pipeline']);
    expect(r.answers.map((a) => a.power!.state)).toEqual(['unconstrained', 'unconstrained', 'proportional', 'critical', 'critical', 'unconstrained']);
    expect(r.answers[2]!.power!.alpha).toBeCloseTo((40 - 15) / (50 - 15), 12);
    expect(r.power!.transitions.map((t) => [t.from, t.to, t.batteryPercent])).toEqual([
      ['unconstrained', 'proportional', 40], ['proportional', 'critical', 10], ['critical', 'unconstrained', 80]]);
    expect(lines).toHaveLength(3);
    expect(r.power).toMatchObject({ state: 'unconstrained', alpha: 1, workersStarted: 2 });
    // Critical: no worker alive, the encoder sessions closed again before the decoder answered; the decoder stays open.
    for (const k of [3, 4]) {
      expect(seen[k]!.workers).toBe(0);
      expect(seen[k]!.open.filter((b) => encoders.includes(b))).toEqual([]);
      expect(seen[k]!.open).toContain(m.set.decoder.brick.name);
      expect(r.answers[k]!.stats.encodeMs).toBeGreaterThan(0);
    }
    expect(seen[5]!.workers).toBe(1); // back up: a new worker
    expect(r.answers.map((a) => [...a.tokens])).toEqual(base.answers.map((a) => [...a.tokens]));
    expect(liveEncoderWorkers()).toBe(0);
    expect(r.ring).toMatchObject({ writing: 0, ready: 0, reading: 0, committed: images.length + r.power!.reencoded });
  }, 60_000);

  it('starts in critical without a worker and never starts one while it stays there', async () => {
    const dir = await supplyDir('low', { BAT0: { type: 'Battery', capacity: '5', status: 'Discharging' } });
    const power = powerMonitor({ dir, thresholds: { highPercent: 50, lowPercent: 15 } });
    const r = await runImageStream(m, images.slice(0, 2), 'x', { maxNewTokens: 2, power });
    expect(r.answers.map((a) => a.mode)).toEqual(['cascade', 'cascade']);
    expect(r.power).toMatchObject({ state: 'critical', workersStarted: 0, transitions: [{ from: 'unconstrained', to: 'critical' }] });
    expect(m.set.openBricks().filter((b) => m.set.encoder('vision').chain.some((c) => c.name === b))).toEqual([]);
  }, 30_000);
});
