// Oracle: float64 dot products of the dequantized packed weights (src/formats/native-weights.ts, written
// in TypeScript, not by the kernels) with the float activations. The kernels quantize activations to int8
// per block of 32, so the tolerance covers that rounding: |err| ≤ 1.5 % of Σ|w·x| per output.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dequantizeRows, quantizeRows, type NativeBits } from '../../src/formats/native-weights.js';
import { loadKernels } from '../../src/run/backends/native/addon.js';
import { mulberry32 } from '../../src/fixtures/blocks.js';

const load = loadKernels();

describe('native kernels: block-quantized matmul', () => {
  it('the addon builds and loads here (CI builds it at npm ci)', () => {
    expect(load.ok ? 'loaded' : load.reason).toBe('loaded');
  });

  for (const bits of [4, 8] as NativeBits[])
    for (const threads of [1, 2])
      it(`Q${bits}, ${threads} thread(s), 6 tokens (a 4-token pass and a 2-token one), matches float64 on the dequantized weights`, () => {
        if (!load.ok) throw new Error(load.reason);
        const n = 67, k = 96, s = 6;
        const rnd = mulberry32(bits * 10 + threads);
        const w = Float32Array.from({ length: n * k }, () => rnd() * 2 - 1);
        const x = Float32Array.from({ length: s * k }, () => (rnd() * 2 - 1) * 3);
        const packed = quantizeRows(bits, w, n, k);
        expect(packed.length).toBe(n * k * (bits === 4 ? 0.5625 : 1.0625));
        const dq = dequantizeRows(bits, packed, n, k);
        const y = load.kernels.matmul(bits, packed, n, k, x, s, threads);
        let worst = 0;
        for (let t = 0; t < s; t++)
          for (let r = 0; r < n; r++) {
            let ref = 0, mag = 0;
            for (let j = 0; j < k; j++) { ref += dq[r * k + j]! * x[t * k + j]!; mag += Math.abs(dq[r * k + j]! * x[t * k + j]!); }
            worst = Math.max(worst, Math.abs(y[t * n + r]! - ref) / mag);
          }
        expect(worst).toBeLessThan(0.015);
        // and the weights themselves are close to the floats (quantization error bound per format)
        let werr = 0;
        for (let i = 0; i < w.length; i++) werr = Math.max(werr, Math.abs(dq[i]! - w[i]!));
        expect(werr).toBeLessThan(bits === 4 ? 1 / 8 + 1e-3 : 1 / 127 + 1e-3);
      });

  it('the portable C path and the SIMD path agree', async () => {
    if (!load.ok) throw new Error(load.reason);
    // the portable path is forced through NANOMIND_KERNELS_PORTABLE in a child process (dispatch is picked once)
    const { execFileSync } = await import('node:child_process');
    const script = `const k=require(${JSON.stringify(process.cwd() + '/kernels/build/Release/nanomind_kernels.node')});`
      + 'const w=new Uint8Array(4*18*2);for(let i=0;i<w.length;i++)w[i]=(i*37+11)&255;for(let r=0;r<8;r++){w[r*18]=0;w[r*18+1]=0x2c;}'
      + 'const x=Float32Array.from({length:64},(_, i)=>Math.sin(i));'
      + 'console.log(JSON.stringify({simd:k.simd(),y:Array.from(k.matmul(4,w,4,64,x,1,1))}))';
    const run = (env: Record<string, string>) => JSON.parse(execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env } }).toString()) as { simd: string; y: number[] };
    const simd = run({}), portable = run({ NANOMIND_KERNELS_PORTABLE: '1' });
    expect(portable.simd).toBe('portable');
    expect(simd.y.length).toBe(4);
    for (let i = 0; i < 4; i++) expect(simd.y[i]).toBeCloseTo(portable.y[i]!, 4);
  });

  // Dispatch only: the AVX-512 VNNI kernel cannot run on a machine without it (this one: AMD EPYC, AVX2); the
  // oracle is the kernel's own flag list in /proc/cpuinfo, read here, not the engine's CPUID probe.
  it.skipIf(process.arch !== 'x64' || !existsSync('/proc/cpuinfo'))('x86-64: the SIMD path follows the CPU flags in /proc/cpuinfo', () => {
    if (!load.ok) throw new Error(load.reason);
    const flags = new Set((readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '').trim().split(/\s+/));
    const want = flags.has('avx2') && flags.has('fma') ? (flags.has('avx512_vnni') && flags.has('avx512vl') ? 'avx512vnni' : 'avx2') : 'portable';
    expect(load.kernels.simd()).toBe(want);
  });
});
