// The engine's vector math outside the matrix products (kernels/src/elementwise.c: a polynomial e^x under SiLU and
// softmax). Oracle: float64 Math.exp on the very inputs the C printed. The end-to-end effect (logits, greedy
// tokens against ONNX Runtime) is test/kernels/oracle.test.ts's.
import { execFileSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildNmCheck, expErrors } from './nm-check.js';

describe('native kernels: elementwise vector math', () => {
  let bin = '';
  beforeAll(async () => { bin = await buildNmCheck('cc', 'nm-check'); }, 60_000);

  it('e^x within 2 ulp of float64 on [-87, 88] and SiLU within 3 ulp over [-90, 90]', () => {
    const r = expErrors(execFileSync(bin, ['exp'], { encoding: 'utf8' }));
    expect(r.lines).toBe(14400);
    expect(r.exp).toBeLessThan(2.4e-7);
    expect(r.silu).toBeLessThan(3.6e-7);
  });
});
