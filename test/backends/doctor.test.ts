/**
 * `nanomind doctor` on this machine (CI: 2 x86 cores, lavapipe Vulkan, no NPU) and on a bundle.
 *
 * Oracles: node's os.cpus() for the core count; the compiled RKNN contract double for "library loads";
 * a bundle's CPU-placed bricks must compare exactly equal to the CPU run (same kernels, same inputs), and
 * the GPU-placed vision brick within 1e-3 (the tolerance test/backends/ort-webgpu.test.ts holds against a
 * plain ORT CPU session).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../src/compile/index.js';
import { partition } from '../../src/partition/index.js';
import { cli } from '../cli-helper.js';
import { buildDouble, type Double } from './doubles/build.js';

const MODEL = join(import.meta.dirname, '..', '..', 'models', 'shapes-vlm');
let root: string;
let rknn: Double;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-doctor-'));
  rknn = await buildDouble('rknn');
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
  if (rknn) await rm(rknn.dir, { recursive: true, force: true });
});

describe('nanomind doctor', () => {
  it('without a bundle: backends, vendor libraries, device nodes, Vulkan devices and CPU clusters', async () => {
    const r = await cli('doctor', '--json');
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(r.stdout).machine;
    expect(m.backends['ort-cpu']).toEqual({ ok: true, detail: 'ready' });
    expect(Object.keys(m.backends)).toContain('ort-webgpu');
    expect(m.libraries['librknnrt.so'].ok).toBe(false);
    expect(m.libraries['librknnrt.so'].detail).toContain('librknnrt.so');
    expect(m.cpu.reduce((n: number, c: { cpus: string }) => n + c.cpus.split(',').reduce((k, part) => {
      const [a, b] = part.split('-').map(Number);
      return k + (b === undefined ? 1 : b - a! + 1);
    }, 0), 0)).toBe(cpus().length);
    expect(Array.isArray(m.devices.npu) && Array.isArray(m.devices.gpuRender)).toBe(true);
    if (m.backends['ort-webgpu'].ok) expect(m.vulkan.devices.length).toBeGreaterThan(0);

    // The library path can be pointed at another build (here the contract double): then it loads.
    const { execFile } = await import('node:child_process');
    const out = await new Promise<string>((res, rej) => execFile(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'nanomind.js'), 'doctor', '--json'],
      { env: { ...process.env, NANOMIND_RKNN_LIB: rknn.lib } }, (e, so) => (e ? rej(e) : res(so))));
    expect(JSON.parse(out).machine.libraries['librknnrt.so']).toEqual({ ok: true, detail: `${rknn.lib} loads` });
  });

  it('with a bundle: every brick on its placed backend vs the CPU, with ms, cosine and max abs error', async () => {
    const bricks = join(root, 'sv');
    await partition({ input: MODEL, out: bricks });
    const bundle = join(root, 'bundle');
    await compile({ bricks, target: 'rk3588', out: bundle, rknn: 'skip', place: [{ brick: 'vision', accelerator: 'gpu' }] });
    const r = await cli('doctor', bundle, '--json');
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout).bundle.bricks as { brick: string; placed: string; backend: string; runMs: number; cosine: number; maxAbsError: number; error?: string }[];
    expect(rows.map((x) => x.brick).sort()).toEqual(['audio', 'decoder', 'embed', 'vision']);
    for (const x of rows) {
      expect(x.error).toBeUndefined();
      expect(x.runMs).toBeGreaterThan(0);
      if (x.brick === 'vision') {
        expect([x.placed, x.backend]).toEqual(['ort-webgpu', 'ort-webgpu']);
        expect(x.cosine).toBeGreaterThan(0.9999);
        expect(x.maxAbsError).toBeLessThanOrEqual(1e-3);
      } else if (x.brick === 'decoder') {
        // compile's default packed the CPU decoder for the native kernels (Q8 of the float brick): close to ORT, not equal
        expect([x.placed, x.backend]).toEqual(['ort-cpu', 'native']);
        expect(x.cosine).toBeGreaterThan(0.999);
        expect(x.maxAbsError).toBeGreaterThan(0);
      } else {
        expect(x.backend).toBe('ort-cpu');
        expect([x.cosine, x.maxAbsError]).toEqual([1, 0]);
      }
    }
    const text = await cli('doctor', bundle);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/vision\s+ort-webgpu\s+ort-webgpu/);
  }, 300_000);
});
