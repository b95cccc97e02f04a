/**
 * The decoder's ORT threads run on the CPUs the plan gives it: the main thread is pinned around the
 * session's creation (threads inherit their creator's mask) and restored afterwards.
 *
 * Oracle: the kernel's own account, /proc/self/task/<tid>/status Cpus_allowed_list, read for the threads
 * that appear while a brick opens (compared with the list of threads before), never the runtime's report.
 * Linux only (the runtime pins on Linux only); needs at least 2 CPUs to tell a pinned thread from an
 * unpinned one (this machine has 2).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openBrickSet } from '../../src/run/brick-set.js';
import { generate } from '../../src/run/generation/chat-session.js';
import { parseCpuList } from '../../src/run/affinity.js';
import { brickSetDir } from './helpers.js';

const tids = () => new Set(readdirSync('/proc/self/task'));
const allowed = (tid: string | number) => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))![1]!;

describe.runIf(process.platform === 'linux')('decoder thread pinning (Linux)', () => {
  it("creates the decoder's intra-op threads on the plan's CPUs and restores the main thread's mask", async () => {
    const main = allowed(process.pid);
    const all = parseCpuList(main);
    expect(all.length, 'this test needs 2 CPUs or more').toBeGreaterThanOrEqual(2);
    const target = all.at(-1)!; // e.g. cpuList "1" on a 2-core machine
    const dir = await brickSetDir('llava');
    const set = await openBrickSet(dir, { threads: 2, placement: { decoder: { backends: ['ort-cpu'], cpus: [target] } } });
    try {
      // Control first (and ORT's process-wide start-up out of the way): the embed brick is not pinned.
      let before = tids();
      await set.session(set.embed!.name);
      const embedThreads = [...tids()].filter((t) => !before.has(t));
      expect(embedThreads.length).toBeGreaterThanOrEqual(1); // 2 intra-op threads: the caller + 1 created
      for (const t of embedThreads) expect(allowed(t)).toBe(main);

      before = tids();
      await set.session(set.decoder.brick.name);
      const decoderThreads = [...tids()].filter((t) => !before.has(t));
      expect(decoderThreads.length).toBeGreaterThanOrEqual(1);
      for (const t of decoderThreads) expect(allowed(t)).toBe(String(target));
      expect(allowed(process.pid)).toBe(main); // restored

      // The stats report what the kernel says.
      expect(set.brickCpus()).toEqual({ [set.embed!.name]: null, [set.decoder.brick.name]: [target] });
      // The pinned pool still runs: two greedy tokens through it.
      const r = await generate(set, { inputIds: [5, 6, 7, 8] }, { maxNewTokens: 2, stopTokenIds: [] });
      expect(r.tokens).toHaveLength(2);
    } finally {
      await set.close();
    }
  });
});
