/**
 * CPU affinity of the calling thread (Linux), bound with koffi to glibc's sched_setaffinity /
 * sched_getaffinity. pid 0 names the calling thread only, and threads a thread creates inherit its
 * mask: a worker thread pinned before it opens its ORT sessions keeps those sessions' intra-op pools
 * on the same cores. That is how a brick placed on a CPU cluster (plan.json `affinity[].cpuList`)
 * runs there: one worker per cluster (./workers/encoder-worker.ts), and for the bricks this thread opens
 * itself (the decoder), `withPinnedThread` around the session's creation: ORT creates its intra-op
 * threads (and the native engine its pool) while the session opens, and they keep the mask they were born
 * with after this thread's own is restored. This thread's share of a parallel op is not pinned.
 */
import { availableParallelism } from 'node:os';
import koffi from 'koffi';
import { fail } from '../errors.js';

// cpu_set_t is 1024 bits in glibc (CPU_SETSIZE).
const CPU_SET_BYTES = 128;

type Fn = (pid: number, size: number, mask: Uint8Array) => number;
let api: { set: Fn; get: Fn } | undefined;

function libc(): { set: Fn; get: Fn } {
  if (process.platform !== 'linux') throw fail('E_AFFINITY', `CPU affinity is only set on Linux (this is ${process.platform})`);
  if (api) return api;
  try {
    const lib = koffi.load('libc.so.6');
    api = {
      set: lib.func('int sched_setaffinity(int pid, size_t cpusetsize, const uint8_t *mask)') as unknown as Fn,
      get: lib.func('int sched_getaffinity(int pid, size_t cpusetsize, _Out_ uint8_t *mask)') as unknown as Fn,
    };
  } catch (e) {
    throw fail('E_AFFINITY', `libc.so.6 does not load: ${(e as Error).message.split('\n')[0]}`);
  }
  return api;
}

/** '0-3,6' → [0, 1, 2, 3, 6] (the kernel's cpulist format, as plan.json and /sys write it). */
export function parseCpuList(list: string): number[] {
  const out = new Set<number>();
  for (const part of list.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    const a = m ? Number(m[1]) : NaN, b = m?.[2] !== undefined ? Number(m[2]) : a;
    if (!m || b < a || b >= CPU_SET_BYTES * 8) throw fail('E_AFFINITY', `'${list}' is not a CPU list (e.g. 0-3,6)`);
    for (let c = a; c <= b; c++) out.add(c);
  }
  if (!out.size) throw fail('E_AFFINITY', `'${list}' names no CPU`);
  return [...out].sort((x, y) => x - y);
}

/** The CPUs the calling thread may run on. */
export function threadAffinity(): number[] {
  const mask = new Uint8Array(CPU_SET_BYTES);
  if (libc().get(0, CPU_SET_BYTES, mask) !== 0) throw fail('E_AFFINITY', 'sched_getaffinity failed');
  const cpus: number[] = [];
  for (let c = 0; c < CPU_SET_BYTES * 8; c++) if (mask[c >> 3]! & (1 << (c & 7))) cpus.push(c);
  return cpus;
}

/** Restricts the calling thread (and the threads it creates from now on) to `cpus`. */
export function pinThread(cpus: readonly number[]): void {
  const mask = new Uint8Array(CPU_SET_BYTES);
  for (const c of cpus) {
    if (!(Number.isSafeInteger(c) && c >= 0 && c < CPU_SET_BYTES * 8)) throw fail('E_AFFINITY', `CPU ${c} is out of range`);
    mask[c >> 3]! |= 1 << (c & 7);
  }
  if (!cpus.length || libc().set(0, CPU_SET_BYTES, mask) !== 0)
    throw fail('E_AFFINITY', `cannot pin this thread to CPUs ${cpus.join(',') || '(none)'}`, { hint: 'the CPUs must exist and be allowed to this process (taskset, cgroup cpusets)' });
}

/**
 * A plan's CPU list on this machine: the CPUs of the list this process may use. A plan made for a
 * board (A76 cores 4-7) run on a smaller host keeps only the cores the host has; none left → undefined
 * (no pinning), with the reason.
 */
export function cpusOnThisMachine(cpuList: string): { cpus?: number[]; why: string } {
  const want = parseCpuList(cpuList);
  let allowed: number[];
  try {
    allowed = threadAffinity();
  } catch {
    allowed = Array.from({ length: availableParallelism() }, (_, i) => i);
  }
  const cpus = want.filter((c) => allowed.includes(c));
  return cpus.length ? { cpus, why: `plan cpuList ${cpuList}${cpus.length < want.length ? ` (${cpus.join(',')} here)` : ''}` }
    : { why: `plan cpuList ${cpuList}: none of these CPUs is available here (${allowed.join(',')}); not pinned` };
}

/** Pinned sections, one at a time: threads created inside one inherit its mask, so none may overlap. */
let sections: Promise<unknown> = Promise.resolve();

/**
 * Runs `open` with the calling thread pinned to `cpus` (undefined: unpinned, but still in turn, so that it
 * cannot create threads inside another call's pinned window), then restores the thread's previous mask.
 * Returns what `open` returns and the CPUs its threads were created on (null: not pinned).
 */
export function withPinnedThread<T>(cpus: readonly number[] | undefined, open: () => Promise<T>): Promise<{ value: T; cpus: number[] | null }> {
  const run = async () => {
    if (!cpus) return { value: await open(), cpus: null };
    const before = threadAffinity();
    pinThread(cpus);
    try {
      return { value: await open(), cpus: threadAffinity() };
    } finally {
      pinThread(before);
    }
  };
  const next = sections.then(run, run);
  sections = next.catch(() => undefined);
  return next;
}
