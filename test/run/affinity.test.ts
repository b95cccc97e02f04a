/**
 * CPU placement (Linux): the koffi binding to sched_setaffinity checked against the kernel's own view
 * (/proc/self/task/<tid>/status, Cpus_allowed_list), the encoder worker pinned before it opens its
 * sessions so ORT's pool threads inherit the mask, and plan.json's cpuList reaching the worker.
 */
import { readFile, readdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpusOnThisMachine, parseCpuList, threadAffinity } from '../../src/run/affinity.js';
import { openModel, type RuntimeModel } from '../../src/run/model.js';
import { runImageStream } from '../../src/run/run.js';
import { liveEncoderWorkers, startEncoderWorker } from '../../src/run/workers/encoder-client.js';
import { cleanupFixtures, fixtureRoot } from '../fixtures/index.js';
import { brickSetDir } from './helpers.js';
import sharp from 'sharp';
import { join } from 'node:path';

/** Cpus_allowed_list of every thread of this process, from the kernel. */
async function taskCpuLists(): Promise<string[]> {
  const out: string[] = [];
  for (const tid of await readdir('/proc/self/task')) {
    const st = await readFile(`/proc/self/task/${tid}/status`, 'utf8').catch(() => '');
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(st);
    if (m) out.push(m[1]!);
  }
  return out;
}

describe('parseCpuList', () => {
  it('reads the kernel cpulist format and refuses anything else (E_AFFINITY)', () => {
    expect(parseCpuList('0-3,6')).toEqual([0, 1, 2, 3, 6]);
    expect(parseCpuList('4-7')).toEqual([4, 5, 6, 7]);
    for (const bad of ['', '3-1', 'a', '0-2000']) expect(() => parseCpuList(bad)).toThrow(expect.objectContaining({ code: 'E_AFFINITY' }));
  });
});

const multi = process.platform === 'linux' && availableParallelism() >= 2;

describe.runIf(multi)('pinning (Linux, 2 or more cores)', () => {
  const last = availableParallelism() - 1;
  let m: RuntimeModel;
  const images: string[] = [];
  beforeAll(async () => {
    m = await openModel(await brickSetDir('llava'));
    for (let i = 0; i < 2; i++) {
      const f = join(await fixtureRoot(), `aff-${i}.png`);
      await sharp({ create: { width: 24, height: 24, channels: 3, background: { r: 200 * i, g: 50, b: 100 } } }).png().toFile(f);
      images.push(f);
    }
  });
  afterAll(async () => { await m?.close(); await cleanupFixtures(); });

  it('the encoder worker runs on the CPUs it was given, and so do the pool threads its sessions created', async () => {
    const mine = threadAffinity();
    const w = await startEncoderWorker({ dir: m.dir, threads: 2, cpus: [last] });
    try {
      expect(w.cpus).toEqual([last]);
      // The kernel's view: the worker thread and the ORT intra-op thread it started are pinned (≥ 2 threads).
      expect((await taskCpuLists()).filter((l) => l === String(last)).length).toBeGreaterThanOrEqual(2);
      expect(threadAffinity()).toEqual(mine); // this thread is untouched
    } finally {
      await w.terminate();
    }
    expect(liveEncoderWorkers()).toBe(0);
  }, 30_000);

  it('runImageStream pins the encoder worker from plan.json affinity, maps a board cluster onto this machine, answers unchanged', async () => {
    const opts = { maxNewTokens: 3, sampling: { temperature: 0 } } as const;
    const base = await runImageStream(m, images, 'x', opts);
    const brick = m.set.encoder('vision').chain[0]!.name;
    const withAffinity = (cpuList: string) => ({ ...m, bundle: { plan: { ringBuffers: [], affinity: [{ brick, accelerator: 'cpu-big', cpuList, threads: 4, why: 'test' }] } } }) as unknown as RuntimeModel;
    const r = await runImageStream(withAffinity(`${last}`), images, 'x', opts);
    expect(r.placement.encoder).toMatchObject({ cpus: [last], threads: 1 });
    expect(r.placement.encoder.why).toContain('cpu-big');
    expect(r.answers.map((a) => [...a.tokens])).toEqual(base.answers.map((a) => [...a.tokens]));
    // An RK3588 big cluster (4-7) on a smaller machine: only the cores that exist, or none (not pinned).
    expect(cpusOnThisMachine(`${last}-${last + 3}`)).toMatchObject({ cpus: [last] });
    expect(cpusOnThisMachine('120-123').cpus).toBeUndefined();
    const far = await runImageStream(withAffinity('120-123'), images, 'x', opts);
    expect(far.placement.encoder.why).toMatch(/not pinned/);
    expect(far.placement.encoder.cpus).toEqual(threadAffinity());
  }, 60_000);
});
