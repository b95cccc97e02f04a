// The engine's vector math outside the matrix products (kernels/src/elementwise.c: a polynomial e^x under SiLU and
// softmax) and one attention head. Oracle: float64 on the very inputs the C printed. The end-to-end effect (logits, greedy
// tokens against ONNX Runtime) is test/kernels/oracle.test.ts's.
import { execFileSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { attendError, buildNmCheck, expErrors } from './nm-check.js';

describe('native kernels: elementwise vector math', () => {
  let bin = '';
  beforeAll(async () => { bin = await buildNmCheck('cc', 'nm-check'); }, 60_000);

  it('e^x within 2 ulp of float64 on [-87, 88] and SiLU within 3 ulp over [-90, 90]', () => {
    const r = expErrors(execFileSync(bin, ['exp'], { encoding: 'utf8' }));
    expect(r.lines).toBe(14400);
    expect(r.exp).toBeLessThan(2.4e-7);
    expect(r.silu).toBeLessThan(3.6e-7);
  });

  // head sizes with and without a 32-float tail, cache lengths around the 4-row and 8-lane steps
  for (const d of [16, 40, 64, 128])
    it(`attention head, head_dim ${d}: softmax(q·Kᵀ/√d)·V within 1e-6 of float64 for 1 to 70 cached rows`, () => {
      for (const len of [1, 3, 4, 5, 9, 33, 70]) expect(attendError(execFileSync(bin, ['attend', String(d), String(len), String(d + len)], { encoding: 'utf8' }), d, len)).toBeLessThan(1e-6);
    });
});
