// The arm64 NEON paths of the engine, for real under qemu-user: kernels/tools/nm-check.c + kernels/src/{engine,elementwise}.c
// cross-compiled with gcc-aarch64-linux-gnu (static), run by qemu-aarch64-static with `-cpu max` (has the dot-product
// extension: the vdotq_s32 path) and `-cpu cortex-a53` (no dotprod: the plain NEON path).
// Oracle: the portable C path of the same binary (NANOMIND_KERNELS_PORTABLE=1) on the same seeded inputs, and the
// x86-64 build of the host (AVX2) on them too: every output within 1e-5 of the largest output's magnitude (the paths
// differ only in float summation order). Correctness only: emulation says nothing about speed.
// Without the cross compiler or qemu the test is skipped with the reason, except under CI (.ci/run installs both).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { attendError, buildNmCheck, expErrors } from './nm-check.js';

const CC = 'aarch64-linux-gnu-gcc', QEMU = 'qemu-aarch64-static';
const has = (cmd: string) => { try { execFileSync('sh', ['-c', `command -v ${cmd}`]); return true; } catch { return false; } };
const missing = [CC, QEMU].filter((c) => !has(c));
const why = missing.length ? `${missing.join(' and ')} not installed (apt-get install gcc-aarch64-linux-gnu qemu-user-static)` : undefined;

const nums = (s: string) => s.trim().split('\n').map(Number);
function within(got: number[], want: number[]): number {
  expect(got.length).toBe(want.length);
  const mag = Math.max(...want.map(Math.abs));
  return Math.max(...got.map((g, i) => Math.abs(g - want[i]!))) / mag;
}

if (why && process.env.CI) throw new Error(`arm64 kernel test needs ${why}`);

describe.skipIf(why !== undefined)(`arm64 NEON kernels under qemu${why ? ` — skipped: ${why}` : ''}`, () => {
  let arm = '', host = '';
  beforeAll(async () => {
    arm = await buildNmCheck(CC, 'nm-check-arm64', ['-static']);
    host = await buildNmCheck('cc', 'nm-check-host');
    expect(existsSync(arm)).toBe(true);
  }, 60_000);
  const run = (cpu: string, args: string[], portable = false) => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.NANOMIND_KERNELS_PORTABLE; // set at all (even empty) means portable
    if (portable) env.NANOMIND_KERNELS_PORTABLE = '1';
    return execFileSync(QEMU, ['-cpu', cpu, arm, ...args], { encoding: 'utf8', env });
  };

  it('picks vdotq_s32 where the CPU has the dot-product extension and plain NEON where it does not', () => {
    expect(run('max', ['simd']).trim()).toBe('neon-dotprod');
    expect(run('cortex-a53', ['simd']).trim()).toBe('neon');
    expect(run('max', ['simd'], true).trim()).toBe('portable');
  });

  const cases: [string, string[]][] = [
    ['Q4 matmul, 101 rows (25 tiles + 1 plain row), 7 tokens (a 4- and a 3-token pass), 2 threads', ['matmul', '4', '101', '256', '7', '2', '7']],
    ['Q8 matmul, 42 rows (10 tiles + 2 plain rows), 5 tokens', ['matmul', '8', '42', '128', '5', '2', '5']],
    ['Q4 decoder forward (GQA, q/k norms, biases): prefill + 3 steps', ['forward', '4', '1']],
    ['Q8 decoder forward', ['forward', '8', '2']],
  ];
  for (const [name, args] of cases)
    it(`${name}: neon-dotprod and neon equal the portable C path (and the x86-64 build)`, () => {
      const ref = nums(run('max', args, true));
      expect(ref.every(Number.isFinite)).toBe(true);
      expect(within(nums(run('max', args)), ref)).toBeLessThan(1e-5);
      expect(within(nums(run('cortex-a53', args)), ref)).toBeLessThan(1e-5);
      expect(within(nums(execFileSync(host, args, { encoding: 'utf8' })), ref)).toBeLessThan(1e-5);
    }, 60_000);

  it('the vector e^x, SiLU and attention head on NEON are as close to float64 as on x86-64', () => {
    const r = expErrors(run('max', ['exp']));
    expect(r.lines).toBe(14400);
    expect(r.exp).toBeLessThan(2.4e-7);
    expect(r.silu).toBeLessThan(3.6e-7);
    for (const [d, len] of [[40, 9], [64, 33]] as const) expect(attendError(run('max', ['attend', String(d), String(len), '1']), d, len)).toBeLessThan(1e-6);
  });
});
