/**
 * `nanomind doctor`: what this machine can run, and whether a bundle's bricks give the same numbers on
 * their placed backend as on the CPU.
 *
 * - `probeMachine()`: every backend's probe, the vendor libraries (librknnrt.so, librkllmrt.so), the device
 *   nodes (/dev/rknpu*, /dev/dri/renderD*), the NPU driver version the kernel reports, the Vulkan devices
 *   with their drivers, and the CPU clusters (cores grouped by maximum frequency).
 * - `checkBundle(dir)`: opens the bundle as `run` does (each brick on its placed backend) and again with
 *   every brick on ort-cpu, feeds both the same deterministic tensors, and reports per brick the backend,
 *   open and run milliseconds, cosine similarity and max abs error against the CPU.
 */
import { readdir, readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import type { BrickEntry } from '../formats/bricks.js';
import type { TensorLike } from './backend.js';
import { BACKENDS } from './backends/index.js';
import { probeWebgpu } from './backends/ort-webgpu.js';
import { RKLLM_LIBRARY } from './backends/rkllm.js';
import { RKNN_LIBRARY } from './backends/rknn.js';
import { vulkanDevices, type VulkanDevice } from './backends/vulkan.js';
import { openBrickSet } from './brick-set.js';
import { tensor, toFloat32 } from './feeds.js';
import { TENSOR } from '../formats/names.js';
import { openModel } from './model.js';

export interface Check { readonly ok: boolean; readonly detail: string }
export interface CpuCluster { readonly cpus: string; readonly model: string; readonly maxMhz: number | null; readonly minMhz: number | null }
export interface MachineReport {
  readonly backends: Readonly<Record<string, Check>>;
  readonly libraries: Readonly<Record<string, Check>>;
  readonly devices: { readonly npu: readonly string[]; readonly gpuRender: readonly string[] };
  readonly npuDriver: string | null;
  readonly vulkan: { readonly ok: boolean; readonly devices: readonly VulkanDevice[]; readonly reason?: string };
  readonly webgpuAdapter: { readonly adapter?: string; readonly driver?: string };
  readonly cpu: readonly CpuCluster[];
}

export async function probeMachine(): Promise<MachineReport> {
  const backends: Record<string, Check> = {};
  for (const [id, b] of Object.entries(BACKENDS)) {
    const p = await b.probe();
    backends[id] = p.ok ? { ok: true, detail: 'ready' } : { ok: false, detail: p.reason };
  }
  const w = await probeWebgpu();
  const vk = vulkanDevices();
  return {
    backends,
    libraries: { [RKNN_LIBRARY]: loadable(process.env.NANOMIND_RKNN_LIB ?? RKNN_LIBRARY), [RKLLM_LIBRARY]: loadable(process.env.NANOMIND_RKLLM_LIB ?? RKLLM_LIBRARY) },
    devices: { npu: await nodes('/dev', /^rknpu/), gpuRender: await nodes('/dev/dri', /^renderD\d+$/) },
    npuDriver: await npuDriverVersion(),
    vulkan: vk.ok ? { ok: true, devices: vk.devices } : { ok: false, devices: [], reason: vk.reason },
    webgpuAdapter: { adapter: w.adapter, driver: w.driver },
    cpu: await cpuClusters(),
  };
}

function loadable(path: string): Check {
  try {
    koffi.load(path).unload();
    return { ok: true, detail: `${path} loads` };
  } catch (e) {
    return { ok: false, detail: `${path}: ${(e as Error).message.split('\n')[0]!}` };
  }
}

async function nodes(dir: string, re: RegExp): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => re.test(n)).sort().map((n) => join(dir, n));
}

const readText = (p: string) => readFile(p, 'utf8').then((s) => s.trim(), () => undefined);

/** The rknpu kernel driver's version: debugfs (root) or the module's sysfs entry. */
async function npuDriverVersion(): Promise<string | null> {
  for (const p of ['/sys/kernel/debug/rknpu/version', '/sys/module/rknpu/version', '/proc/rknpu/version']) {
    const v = await readText(p);
    if (v) return v;
  }
  return null;
}

/** Cores grouped by their cpufreq range (big.LITTLE clusters); one group with nulls where cpufreq is absent. */
async function cpuClusters(): Promise<CpuCluster[]> {
  const list = cpus();
  const groups = new Map<string, { ids: number[]; model: string; max: number | null; min: number | null }>();
  for (const [i, c] of list.entries()) {
    const khz = async (f: string) => { const v = await readText(`/sys/devices/system/cpu/cpu${i}/cpufreq/${f}`); return v ? Math.round(Number(v) / 1000) : null; };
    const max = await khz('cpuinfo_max_freq'), min = await khz('cpuinfo_min_freq');
    const key = `${max}/${min}/${c.model}`;
    const g = groups.get(key) ?? { ids: [], model: c.model.trim(), max, min };
    g.ids.push(i);
    groups.set(key, g);
  }
  return [...groups.values()].map((g) => ({ cpus: ranges(g.ids), model: g.model, maxMhz: g.max, minMhz: g.min }));
}

const ranges = (ids: readonly number[]): string => {
  const out: string[] = [];
  for (let i = 0; i < ids.length;) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
    out.push(i === j ? `${ids[i]}` : `${ids[i]}-${ids[j]}`);
    i = j + 1;
  }
  return out.join(',');
};

// ---------------------------------------------------------------------------------------------------

export interface BrickCheck {
  readonly brick: string;
  readonly placed: string;
  readonly backend: string;
  readonly openMs: number;
  /** The second run (the first one after opening may include shader compilation). */
  readonly runMs: number;
  readonly cpuRunMs: number;
  /** Over all float outputs together; 1 when both sides ran on the same backend's kernels. */
  readonly cosine: number;
  readonly maxAbsError: number;
  readonly error?: string;
}
export interface BundleReport { readonly dir: string; readonly notices: readonly string[]; readonly bricks: readonly BrickCheck[] }

/** Dim values for symbolic dims when synthesizing feeds: a 4-token step after 3 cached positions. */
const DIMS: Readonly<Record<string, number>> = { batch_size: 1, batch: 1, sequence_length: 4, past_sequence_length: 3, total_sequence_length: 7 };

/**
 * A decoder whose backend keeps its own KV cache (RKLLM, the native engine) starts from an empty cache:
 * the same 4 tokens at positions 0…3, with an empty past on the CPU side.
 */
const FRESH_DIMS: Readonly<Record<string, number>> = { ...DIMS, past_sequence_length: 0, total_sequence_length: 4 };

/** Deterministic feeds for a brick from its declared interface (documented values; no randomness). */
export function syntheticFeeds(b: BrickEntry, dimValues: Readonly<Record<string, number>> = DIMS): Record<string, TensorLike> {
  const feeds: Record<string, TensorLike> = {};
  for (const [k, i] of b.inputs.entries()) {
    const dims = (i.shape ?? []).map((d) => (typeof d === 'number' ? d : dimValues[String(d)] ?? 1));
    const n = dims.reduce((a, d) => a * d, 1);
    if (i.dtype === 'int64') {
      const at = (j: number) => (i.name === 'attention_mask' || i.name.endsWith('use_cache_branch') ? 1n
        : i.name === 'position_ids' ? BigInt(dimValues.past_sequence_length! + (j % (dims.at(-1) ?? 1))) : BigInt((7 * j + 11) % 97));
      feeds[i.name] = tensor('int64', BigInt64Array.from({ length: n }, (_, j) => at(j)), dims);
    } else if (i.dtype === 'bool') {
      feeds[i.name] = tensor('bool', Uint8Array.from({ length: n }, () => 1), dims);
    } else {
      feeds[i.name] = tensor('float32', Float32Array.from({ length: n }, (_, j) => Math.sin(0.1 * j + k + 0.3)), dims);
    }
  }
  return feeds;
}

export async function checkBundle(dir: string, opts: { threads?: number } = {}): Promise<BundleReport> {
  const placed = await openModel(dir, { threads: opts.threads });
  try {
    // The reference is ONNX Runtime on the CPU for every brick, a natively packed decoder included.
    const cpu = await openBrickSet(dir, { threads: opts.threads, checkHashes: false, engine: 'ort' });
    try {
      const bricks: BrickCheck[] = [];
      const placedOn = new Map((placed.bundle?.manifest.bricks ?? []).map((b) => [b.name, b.backend as string]));
      for (const b of placed.set.manifest.bricks) {
        const backend = placed.set.placed[b.name]!.backend;
        const base = { brick: b.name, placed: placedOn.get(b.name) ?? backend, backend };
        try {
          let t = performance.now();
          const session = await placed.set.session(b.name);
          const openMs = performance.now() - t;
          const own = session.ownsKv;
          const feeds = syntheticFeeds(b, own ? FRESH_DIMS : DIMS);
          const placedFeeds = own ? Object.fromEntries(Object.entries(feeds).filter(([n]) => !n.startsWith('past_key_values.'))) : feeds;
          own?.truncate(0);
          await placed.set.run(b.name, placedFeeds);
          own?.truncate(0);
          t = performance.now();
          const got = await placed.set.run(b.name, placedFeeds);
          const runMs = performance.now() - t;
          await cpu.run(b.name, feeds);
          t = performance.now();
          const want = await cpu.run(b.name, feeds);
          const cpuRunMs = performance.now() - t;
          // A backend with its own KV gives the last row of logits only: compare that row.
          bricks.push({ ...base, openMs, runMs, cpuRunMs, ...(own ? compare(lastLogits(got), lastLogits(want)) : compare(got, want)) });
        } catch (e) {
          bricks.push({ ...base, openMs: NaN, runMs: NaN, cpuRunMs: NaN, cosine: NaN, maxAbsError: NaN, error: (e as Error).message.split('\n')[0] });
        }
      }
      return { dir, notices: placed.notices, bricks };
    } finally {
      await cpu.close();
    }
  } finally {
    await placed.close();
  }
}

/** Just the last row of `logits`. */
function lastLogits(out: Record<string, TensorLike>): Record<string, TensorLike> {
  const l = out[TENSOR.logits];
  if (!l) return {};
  const V = l.dims.at(-1)!;
  return { [TENSOR.logits]: tensor('float32', toFloat32(l, TENSOR.logits).slice(l.data.length - V), [V]) };
}

/** Cosine and max abs error over every float output (in float64). */
function compare(got: Record<string, TensorLike>, want: Record<string, TensorLike>): { cosine: number; maxAbsError: number } {
  let dot = 0, na = 0, nb = 0, max = 0;
  for (const [name, w] of Object.entries(want)) {
    if (!(w.data instanceof Float32Array)) continue;
    const g = got[name];
    if (!g || !(g.data instanceof Float32Array) || g.data.length !== w.data.length) return { cosine: NaN, maxAbsError: Infinity };
    for (let i = 0; i < w.data.length; i++) {
      const a = g.data[i]!, b = w.data[i]!;
      dot += a * b; na += a * a; nb += b * b;
      max = Math.max(max, Math.abs(a - b));
    }
  }
  const cosine = na === 0 && nb === 0 ? 1 : dot / Math.sqrt(na * nb);
  return { cosine, maxAbsError: max };
}
