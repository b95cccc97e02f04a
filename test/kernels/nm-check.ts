// Builds kernels/tools/nm-check (the engine's C without N-API) for the tests that drive it: the host build and
// the arm64 cross build run the very sources the addon compiles.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';

// kernels/binding.gyp's sources (less the N-API binding) and flags: the engine as the addon builds it.
const GYP = (JSON.parse(readFileSync('kernels/binding.gyp', 'utf8')) as { targets: { sources: string[]; cflags: string[] }[] }).targets[0]!;
const SRC = ['kernels/tools/nm-check.c', ...GYP.sources.filter((f) => !f.endsWith('binding.c')).map((f) => `kernels/${f}`)];
const FLAGS = GYP.cflags;

/** Compiles nm-check with `cc` (extra flags e.g. -static) into a fresh temp dir; returns the binary's path. */
export async function buildNmCheck(cc: string, name: string, extra: readonly string[] = []): Promise<string> {
  const out = join(await mkdtemp(join(tmpdir(), 'nm-check-')), name);
  execFileSync(cc, [...FLAGS, ...extra, '-o', out, ...SRC, '-lm', '-lpthread']);
  return out;
}

/**
 * Worst relative errors of `nm-check exp` output (x, e^x, silu(x) per line) against float64 Math.exp, over the
 * range the engine promises ([-87, 88]: e^x within 2 ulp of expf); silu is checked everywhere (the clamp below
 * -87 only moves results smaller than 1e-35 in absolute terms).
 */
export function expErrors(out: string): { lines: number; exp: number; silu: number } {
  let exp = 0, silu = 0, lines = 0;
  for (const line of out.trim().split('\n')) {
    const [x, e, s] = line.split(' ').map(Number) as [number, number, number];
    lines++;
    if (x >= -87 && x <= 88) exp = Math.max(exp, Math.abs(e - Math.exp(x)) / Math.exp(x));
    const want = x / (1 + Math.exp(-x));
    silu = Math.max(silu, Math.abs(s - want) / Math.max(Math.abs(want), 1e-30) * (Math.abs(want) < 1e-35 ? 0 : 1));
  }
  return { lines, exp, silu };
}

/**
 * Worst error of `nm-check attend D LEN SEED` output (q, K, V, then the engine's output, one number per line)
 * against softmax(q·Kᵀ/√D)·V in float64, relative to the largest |V| (1 here).
 */
export function attendError(out: string, d: number, len: number): number {
  const v = out.trim().split('\n').map(Number);
  expect(v.length).toBe(d * (2 + 2 * len));
  const q = v.slice(0, d), K = v.slice(d, d + len * d), V = v.slice(d + len * d, d + 2 * len * d), got = v.slice(d + 2 * len * d);
  const s = Array.from({ length: len }, (_, p) => q.reduce((a, x, i) => a + x * K[p * d + i]!, 0) / Math.sqrt(d));
  const mx = Math.max(...s), e = s.map((x) => Math.exp(x - mx)), sum = e.reduce((a, x) => a + x, 0);
  let worst = 0;
  for (let i = 0; i < d; i++) worst = Math.max(worst, Math.abs(got[i]! - e.reduce((a, w, p) => a + w * V[p * d + i]!, 0) / sum));
  return worst;
}
