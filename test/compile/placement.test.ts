import { describe, expect, it } from 'vitest';
import { costModel, type Workload } from '../../src/compile/cost.js';
import { place } from '../../src/compile/placement.js';
import { loadTarget } from '../../src/compile/targets.js';
import { onevisionLike, SYNTH } from './synthetic.js';

const W: Workload = { images: 1, audioClips: 0, promptTokens: 32, outputTokens: 64, maxContext: 4096 };

describe('placement on rk3588', () => {
  it('keeps a w4a16 decoder off the NPU, saying why', async () => {
    const t = await loadTarget('rk3588');
    for (const f of ['w4a16-g32', 'w4a16-g128'] as const) {
      const r = place(onevisionLike(f), t, { objective: 'latency', workload: W });
      const dec = r.bricks.find((b) => b.brick === 'decoder')!;
      expect(dec.accelerator).not.toBe('npu');
      const npu = dec.alternatives.find((a) => a.accelerator === 'npu')!;
      expect(npu.ok).toBe(false);
      expect(npu.reason).toMatch(/rkllm.*w8a8.*not w4a16/);
    }
  });

  it('puts a w8a8 decoder on the NPU (through RKLLM) when the cost model prefers it', async () => {
    const t = await loadTarget('rk3588');
    const set = onevisionLike('w8a8');
    const r = place(set, t, { objective: 'latency', workload: W });
    const dec = r.bricks.find((b) => b.brick === 'decoder')!;
    expect(dec).toMatchObject({ accelerator: 'npu', format: 'w8a8', route: 'rkllm' });
    const alt = (id: string) => dec.alternatives.find((a) => a.accelerator === id && a.ok)!;
    expect(alt('npu').decodeMsPerToken!).toBeLessThan(alt('cpu-big').decodeMsPerToken!);
    // The embedding has dynamic dims: never on the static-shape NPU.
    expect(r.bricks.find((b) => b.brick === 'embed')!.alternatives.find((a) => a.accelerator === 'npu')!.reason).toMatch(/static shapes/);
    // When the NPU costs more (a slow NPU), the same decoder goes to the CPU.
    const slow = structuredClone(t) as typeof t;
    (slow.accelerators[0] as { memoryEfficiency: { value: number } }).memoryEfficiency.value = 0.05;
    expect(place(set, slow, { objective: 'latency', workload: W }).bricks.find((b) => b.brick === 'decoder')!.accelerator).not.toBe('npu');
  });

  it('rk3576 runs a w4a16 decoder on its NPU; raspberry-pi-5 has only its CPU', async () => {
    const r = place(onevisionLike('w4a16-g32'), await loadTarget('rk3576'), { objective: 'latency', workload: W });
    expect(r.bricks.find((b) => b.brick === 'decoder')!.alternatives.find((a) => a.accelerator === 'npu')!.ok).toBe(true);
    const pi = place(onevisionLike('w4a16-g32'), await loadTarget('raspberry-pi-5'), { workload: W });
    expect(new Set(pi.bricks.map((b) => b.accelerator))).toEqual(new Set(['cpu']));
  });

  it('honours --place and refuses an impossible one with E_PLACE_INFEASIBLE', async () => {
    const t = await loadTarget('rk3588');
    const r = place(onevisionLike('w8a8'), t, { workload: W, overrides: [{ brick: 'vision', accelerator: 'gpu' }] });
    expect(r.bricks.find((b) => b.brick === 'vision')!.accelerator).toBe('gpu');
    expect(() => place(onevisionLike('w4a16-g32'), t, { workload: W, overrides: [{ brick: 'decoder', accelerator: 'npu' }] })).toThrow(expect.objectContaining({ code: 'E_PLACE_INFEASIBLE' }));
  });

  it('the roofline matches a hand computation (float64) for a decode step and an encoder call', async () => {
    const t = await loadTarget('rk3588');
    const set = onevisionLike('w8a8');
    const dec = set.bricks[2];
    const npu = t.accelerators.find((a) => a.id === 'npu')!;
    const m = costModel(dec, npu, 'w8a8', t, W);
    const ctx = 1000;
    const kvBytes = SYNTH.LAYERS * 2 * SYNTH.KV_HEADS * SYNTH.HEAD_DIM * 4 * (1 / 4) * ctx; // int8 KV on the NPU
    const io = (SYNTH.HIDDEN + ctx + SYNTH.VOCAB) * 4 * (1 / 4) + ctx * 8 * (1 / 4) - ctx * 4 * (1 / 4); // embeds + mask(int64) + logits, scaled to 1-byte activations
    const bytes = 494e6 + kvBytes + io;
    const memMs = bytes / (34.1e9 * 0.6) * 1e3;
    const computeMs = (2 * 494e6 + 4 * SYNTH.LAYERS * SYNTH.HIDDEN * ctx) / (6000e9 * 0.15) * 1e3;
    const c = m.call(1, ctx);
    expect(c.memoryMs).toBeCloseTo(memMs, 6);
    expect(c.computeMs).toBeCloseTo(computeMs, 9);
    expect(c.ms).toBeCloseTo(Math.max(memMs, computeMs) + 0.5, 6);
    expect(c.bound).toBe('memory');
    expect(c.mJ).toBeCloseTo(2.8 * c.ms, 9);
    // Decode on the NPU: 41.58 tok/s measured by Rockchip for Qwen2-0.5B w8a8 (rknn-llm benchmark.md); the model should be within 2×.
    expect(1000 / m.call(1, 160).ms).toBeGreaterThan(41.58 / 2);
    expect(1000 / m.call(1, 160).ms).toBeLessThan(41.58 * 2);
    // A vision encoder call is compute-bound: 2 × 400e6 × 729 FLOPs on the big cores at fp32.
    const cpu = t.accelerators.find((a) => a.id === 'cpu-big')!;
    const v = costModel(set.bricks[0], cpu, 'fp32', t, W).call(1, 1);
    expect(v.computeMs).toBeCloseTo(2 * 400e6 * 729 / (153.6e9 * 0.5) * 1e3, 6);
    expect(v.bound).toBe('compute');
  });
});
