/**
 * `nanomind bench --calibrate`: the measured `host` profile passes the target checks with every number
 * sourced, the CLI writes it atomically, `compile --target <file>` takes it, and the usage errors exit 2.
 * Small sizes (8 MiB, one run) keep it fast; no assertion depends on how fast this machine is.
 */
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrateHost, hostProfile, writeTargetFile } from '../../src/compile/calibrate.js';
import { checkTarget, type TargetProfile } from '../../src/compile/targets.js';
import { readBundle } from '../../src/formats/bundle.js';
import { partition } from '../../src/partition/index.js';
import { cleanupFixtures, fixtureDir } from '../fixtures/index.js';
import { cli } from '../cli-helper.js';



/** Every quantity `{value, source, …}` in a profile, with its path. */
function quantities(v: unknown, at = ''): [string, { value: unknown; source: unknown }][] {
  if (!v || typeof v !== 'object') return [];
  if ('value' in v && 'source' in v) return [[at, v as { value: unknown; source: unknown }]];
  return Object.entries(v).flatMap(([k, x]) => quantities(x, at ? `${at}.${k}` : k));
}

let work: string;
let profile: TargetProfile;
const stages: string[] = [];
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'nanomind-calibrate-'));
  profile = await calibrateHost({ mib: 8, runs: 1, onStage: (s) => stages.push(s) });
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); await cleanupFixtures(); });

describe('calibrateHost', () => {
  it('returns a host profile that checkTarget accepts, with positive finite measurements', () => {
    expect(() => checkTarget(JSON.parse(JSON.stringify(profile)), 'host.json')).not.toThrow();
    expect(stages).toEqual(['memory read', 'fp32 matmul', 'int8 matmul', 'launch overhead', 'node and tensor overhead', 'runtime loop and image preprocessing', 'weight streaming']);
    expect(profile).toMatchObject({ format: 'nanomind.target', version: 1, name: 'host', default: true });
    const cpu = profile.accelerators[0];
    expect(cpu).toMatchObject({ id: 'cpu', kind: 'cpu', backend: 'ort-cpu', staticShapes: false });
    for (const q of [profile.memory.peakGBps, profile.memory.sustainedGBps, profile.memory.totalBytes, cpu.peakGops.fp32!, cpu.peakGops.int8!, cpu.launchOverheadMs, cpu.cores]) {
      expect(q.source).toBe('measured');
      expect(Number.isFinite(q.value)).toBe(true);
      expect(q.value).toBeGreaterThan(0);
    }
    // Differences of two timings: measured, never negative (0 when within the noise).
    for (const q of [cpu.nodeOverheadMs!, cpu.tensorOverheadMs!, cpu.nodeElementNs!, profile.runtime!.tokenLoopMs, profile.runtime!.prefillLoopMs!, profile.runtime!.imagePreprocessMs, profile.runtime!.imagePreprocessMsPerMpx]) {
      expect(q.source).toBe('measured');
      expect(q.value).toBeGreaterThanOrEqual(0);
    }
    // Decode's weight-streaming rate over the read rate: derived from two measurements, never a carried guess.
    expect(cpu.memoryEfficiency.source).toBe('derived');
    expect(cpu.memoryEfficiency.value).toBeGreaterThan(0);
    expect(profile.sources.measured).toMatchObject({ kind: 'measurement', title: expect.stringMatching(/^Measured by `nanomind bench --calibrate` on \d{4}-\d\d-\d\dT.*Node v\d+.*onnxruntime-node \d+\.\d+.*\d+ threads?: best of 1 runs$/) });
  });

  it('sources every number; only unmeasured ones are null', () => {
    const qs = quantities(profile);
    expect(qs.length).toBeGreaterThan(15);
    for (const [at, q] of qs) {
      const src = profile.sources[q.source as string];
      expect(src, at).toBeDefined();
      if (q.value === null) expect(src.kind, at).toBe('unmeasured');
      else {
        expect(typeof q.value, at).toBe('number');
        expect(src.kind, at).not.toBe('unmeasured');
      }
    }
    expect(qs.filter(([, q]) => q.value === null).map(([at]) => at).sort()).toEqual([
      'accelerators.0.activePowerW', 'battery.capacityMah', 'battery.converterEfficiency', 'battery.voltage',
      'power.cameraW', 'power.idleW', 'power.microphoneW', 'storage.readMBps']);
    expect([profile.powerPolicy.highPercent.source, profile.powerPolicy.lowPercent.source]).toEqual(['assumption', 'assumption']);
  });

  it('refuses bad options and measurements that are not positive numbers', async () => {
    await expect(calibrateHost({ runs: 0 })).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
    await expect(calibrateHost({ mib: 1.5 })).rejects.toMatchObject({ code: 'E_BAD_OPTION' });
    const m = { readGBps: 10, fp32Gflops: 100, int8Gops: 200, launchOverheadMs: 0.01, nodeOverheadMs: 0, tensorOverheadMs: 0.001, nodeElementNs: 0.2, tokenLoopMs: 0.02, prefillLoopMs: 0.1, weightGBps: 15, imagePreprocessMs: 3, imagePreprocessMsPerMpx: 50 };
    expect(hostProfile(m, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' }).accelerators[0]!.memoryEfficiency.value).toBe(1.5);
    expect(() => hostProfile({ ...m, weightGBps: 0 }, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' })).toThrow(expect.objectContaining({ code: 'E_CALIBRATE' }));
    expect(hostProfile(m, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' }).memory.sustainedGBps.value).toBe(10);
    expect(() => hostProfile({ ...m, int8Gops: Infinity }, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' })).toThrow(expect.objectContaining({ code: 'E_CALIBRATE' }));
    expect(() => hostProfile({ ...m, tokenLoopMs: -1 }, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' })).toThrow(expect.objectContaining({ code: 'E_CALIBRATE' }));
    expect(() => hostProfile({ ...m, launchOverheadMs: 0 }, { mib: 8, runs: 1, threads: 1, cores: 1, ortVersion: '1.30.0' })).toThrow(expect.objectContaining({ code: 'E_CALIBRATE' }));
  });

  it('writeTargetFile writes atomically, replaces a profile and refuses any other file', async () => {
    const dir = join(work, 'write');
    const file = await writeTargetFile(join(dir, 'sub', 'host.json'), profile);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(JSON.parse(JSON.stringify(profile)));
    await writeTargetFile(file, profile);
    expect(await readdir(join(dir, 'sub'))).toEqual(['host.json']);
    const other = join(dir, 'package.json');
    await writeFile(other, '{"name": "keep me"}');
    await expect(writeTargetFile(other, profile)).rejects.toMatchObject({ code: 'E_OUTPUT_EXISTS' });
    expect(await readFile(other, 'utf8')).toBe('{"name": "keep me"}');
  });
});

describe('nanomind bench --calibrate', () => {
  it('writes the profile, prints it with --json, and compile --target takes the file', async () => {
    const file = join(work, 'cli', 'host.json');
    const r = await cli('bench', '--calibrate', '--mib', '8', '--runs', '1', '-o', file, '--json');
    expect(r.code).toBe(0);
    const written = JSON.parse(await readFile(file, 'utf8'));
    expect(JSON.parse(r.stdout)).toEqual(written);
    expect(() => checkTarget(written, file)).not.toThrow();
    expect(written.accelerators[0].peakGops.int8.value).toBeGreaterThan(0);

    const bricks = join(work, 'bricks');
    await partition({ input: (await fixtureDir('llava')).dir, out: bricks });
    const bundle = join(work, 'bundle');
    const c = await cli('compile', bricks, '--target', file, '-o', bundle, '--json');
    expect(c.code, c.stderr).toBe(0);
    const b = await readBundle(bundle);
    expect(b.manifest.target.name).toBe('host');
    expect(b.manifest.bricks.every((x) => x.backend === 'ort-cpu')).toBe(true);
  });

  it('prints a table and where the profile went', async () => {
    const file = join(work, 'text', 'host.json');
    const r = await cli('bench', '--calibrate', '--mib', '8', '--runs', '1', '--threads', '1', '-o', file);
    expect(r.code, r.stderr).toBe(0);
    for (const row of ['memory read', 'fp32 matmul', 'int8 matmul', 'launch overhead', 'cores']) expect(r.stdout).toContain(row);
    expect(r.stdout).toContain(`wrote ${file}`);
    expect(JSON.parse(await readFile(file, 'utf8')).sources.measured.title).toContain('1 thread: best of 1 runs');
  });

  it('usage errors exit 2', async () => {
    const cases: string[][] = [
      ['bench'],
      ['bench', work, '--calibrate'],
      ['bench', '--calibrate', '--prompt-tokens', '8'],
      ['bench', work, '--mib', '8'],
      ['bench', work, '-o', join(work, 'x.json')],
      ['bench', '--calibrate', '--mib', '0'],
      ['bench', '--calibrate', '--runs', 'x'],
    ];
    for (const args of cases) {
      const r = await cli(...args);
      expect([args.join(' '), r.code, r.stderr]).toEqual([args.join(' '), 2, expect.stringMatching(/^error\[E_USAGE\]/)]);
    }
    const j = await cli('bench', '--json');
    expect([j.code, JSON.parse(j.stdout).error.code]).toEqual([2, 'E_USAGE']);
    expect(await readdir(work)).not.toContain('x.json');
  });
});
