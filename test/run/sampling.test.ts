import { describe, expect, it } from 'vitest';
import {
  applyRepetitionPenalty, argmax, createSampler, mulberry32, resolveSamplingOptions, softmax, type SamplingOptions,
} from '../../src/run/generation/sampling.js';
import { NanomindError } from '../../src/errors.js';
import { codeOf } from '../error-codes.js';

const row = (...v: number[]) => Float32Array.from(v);


/** Random logits from a seeded generator, so failures reproduce. */
function randomLogits(n: number, seed: number, scale = 4): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 2 * scale);
}

function frequencies(opts: SamplingOptions, logits: Float32Array, draws: number): Float64Array {
  const s = createSampler(opts);
  const f = new Float64Array(logits.length);
  for (let i = 0; i < draws; i++) f[s(logits, [])]! += 1 / draws;
  return f;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** Renormalized softmax over `keep`, zero elsewhere: the distribution a filter should leave. */
function restricted(p: Float64Array, keep: (i: number) => boolean): Float64Array {
  const q = p.map((x, i) => (keep(i) ? x : 0));
  const s = q.reduce((a, b) => a + b, 0);
  return q.map((x) => x / s);
}

/** Reference nucleus: ids by descending probability until the cumulative sum reaches p. */
function nucleus(p: Float64Array, topP: number): Set<number> {
  const order = Array.from(p.keys()).sort((a, b) => p[b]! - p[a]! || a - b);
  const keep = new Set<number>();
  let cum = 0;
  for (const i of order) {
    keep.add(i);
    cum += p[i]!;
    if (cum >= topP) break;
  }
  return keep;
}

// With 20k draws one frequency has σ ≤ sqrt(0.25 / 20000) ≈ 0.0035, so 0.02 is a > 5σ bound.
const DRAWS = 20_000;
const TOL = 0.02;

describe('mulberry32', () => {
  it('is deterministic per seed and uniform in [0, 1)', () => {
    const a = mulberry32(42), b = mulberry32(42), c = mulberry32(43);
    const xa = Array.from({ length: 5 }, a), xb = Array.from({ length: 5 }, b), xc = Array.from({ length: 5 }, c);
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
    const r = mulberry32(7);
    let sum = 0;
    for (let i = 0; i < 10_000; i++) {
      const x = r();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
    }
    expect(Math.abs(sum / 10_000 - 0.5)).toBeLessThan(0.01);
  });
});

describe('greedy', () => {
  it('temperature 0 returns the argmax', () => {
    const s = createSampler({ temperature: 0 });
    expect(s(row(0.1, 3.5, -2, 3.4), [])).toBe(1);
    for (let seed = 0; seed < 20; seed++) {
      const l = randomLogits(1000, seed);
      let best = 0;
      for (let i = 1; i < l.length; i++) if (l[i]! > l[best]!) best = i;
      expect(s(l, [])).toBe(best);
    }
  });
  it('breaks ties towards the lowest id', () => {
    expect(createSampler({ temperature: 0 })(row(1, 5, 2, 5, 5), [])).toBe(1);
    expect(argmax(row(-Infinity, -Infinity, -3))).toBe(2);
  });
  it('top-k = 1 equals greedy at any temperature', () => {
    for (let seed = 0; seed < 10; seed++) {
      const l = randomLogits(500, 100 + seed, 1);
      expect(createSampler({ topK: 1, temperature: 5, seed })(l, [])).toBe(argmax(l));
    }
  });
  it('a tiny top-p equals greedy', () => {
    const s = createSampler({ topP: 1e-9, temperature: 2, seed: 3 });
    for (let seed = 0; seed < 10; seed++) {
      const l = randomLogits(500, 200 + seed, 1);
      for (let k = 0; k < 5; k++) expect(s(l, [])).toBe(argmax(l));
    }
  });
  it('a tiny top-p still keeps one token when the top tokens tie (the lowest id)', () => {
    const s = createSampler({ topP: 1e-6, seed: 1 });
    for (let k = 0; k < 50; k++) expect(s(row(0, 2, 2, 1), [])).toBe(1);
  });
  it('min-p = 1 keeps only the most likely token', () => {
    const l = randomLogits(300, 9);
    const s = createSampler({ minP: 1, seed: 4 });
    for (let k = 0; k < 20; k++) expect(s(l, [])).toBe(argmax(l));
  });
});

describe('reproducibility', () => {
  const run = (seed: number) => {
    const s = createSampler({ temperature: 1, seed });
    const l = new Float32Array(1000); // uniform: every token equally likely, so sequences differ by seed
    return Array.from({ length: 50 }, () => s(l, []));
  };
  it('the same seed gives the same sequence', () => {
    expect(run(1234)).toEqual(run(1234));
  });
  it('different seeds give different sequences', () => {
    expect(run(1234)).not.toEqual(run(1235));
  });
  it('without a seed one is chosen and exposed so the run can be replayed', () => {
    const a = createSampler({ temperature: 1 });
    expect(Number.isInteger(a.seed)).toBe(true);
    const l = randomLogits(100, 5, 0.5);
    const seqA = Array.from({ length: 30 }, () => a(l, []));
    const b = createSampler({ temperature: 1, seed: a.seed });
    expect(Array.from({ length: 30 }, () => b(l, []))).toEqual(seqA);
  });
});

describe('distribution', () => {
  const logits = row(1.0, 2.0, 0.5, -1.0, 1.5, 0.0, -0.5, 2.2);

  it('T = 1 matches softmax(logits)', () => {
    expect(maxAbsDiff(frequencies({ seed: 11 }, logits, DRAWS), softmax(logits))).toBeLessThanOrEqual(TOL);
  });
  it('T = 0.5 and T = 2 match softmax(logits / T)', () => {
    for (const T of [0.5, 2]) {
      const f = frequencies({ temperature: T, seed: 12 }, logits, DRAWS);
      expect(maxAbsDiff(f, softmax(logits, T))).toBeLessThanOrEqual(TOL);
    }
  });
  it('passes a chi-square goodness-of-fit test at T = 0.7', () => {
    const T = 0.7;
    const p = softmax(logits, T);
    const f = frequencies({ temperature: T, seed: 13 }, logits, DRAWS);
    let chi2 = 0;
    for (let i = 0; i < p.length; i++) chi2 += (f[i]! * DRAWS - p[i]! * DRAWS) ** 2 / (p[i]! * DRAWS);
    expect(chi2).toBeLessThan(24.32); // 7 degrees of freedom, p = 0.001
  });
  it('top-k = 3 samples the renormalized three most likely tokens', () => {
    const T = 0.8;
    const f = frequencies({ temperature: T, topK: 3, seed: 14 }, logits, DRAWS);
    const top3 = new Set([7, 1, 4]);
    expect(maxAbsDiff(f, restricted(softmax(logits, T), (i) => top3.has(i)))).toBeLessThanOrEqual(TOL);
  });
  it('top-p keeps the smallest set reaching p, then renormalizes', () => {
    const p = softmax(logits);
    // p by rank ≈ .331 (id 7) .271 (1) .165 (4) .100 (0) ...: 0.65 needs three (.602 < .65 ≤ .767)
    expect(nucleus(p, 0.65)).toEqual(new Set([7, 1, 4]));
    const keep = new Set([7, 1, 4]);
    const f = frequencies({ topP: 0.65, seed: 15 }, logits, DRAWS);
    expect(maxAbsDiff(f, restricted(p, (i) => keep.has(i)))).toBeLessThanOrEqual(TOL);
    expect(f.filter((x, i) => !keep.has(i) && x > 0).length).toBe(0);
  });
  it('top-p applies to the distribution left by top-k', () => {
    const p = restricted(softmax(logits), (i) => [7, 1, 4, 0].includes(i));
    // top 4 renormalized ≈ .382 .313 .190 .115: 0.85 needs three (.695 < .85 ≤ .885); without top-k it needs four (.767 < .85 ≤ .867)
    expect(nucleus(p, 0.85)).toEqual(new Set([7, 1, 4]));
    expect(nucleus(softmax(logits), 0.85).size).toBe(4);
    const keep = new Set([7, 1, 4]);
    const f = frequencies({ topK: 4, topP: 0.85, seed: 16 }, logits, DRAWS);
    expect(maxAbsDiff(f, restricted(p, (i) => keep.has(i)))).toBeLessThanOrEqual(TOL);
  });
  it('min-p drops tokens below minP × the top probability', () => {
    const p = softmax(logits);
    const pmax = Math.max(...p);
    const keep = (i: number) => p[i]! >= 0.3 * pmax;
    const f = frequencies({ minP: 0.3, seed: 17 }, logits, DRAWS);
    expect(maxAbsDiff(f, restricted(p, keep))).toBeLessThanOrEqual(TOL);
    expect(f.filter((x, i) => !keep(i) && x > 0).length).toBe(0);
  });
  it('never samples a -Infinity (masked) token', () => {
    const l = row(-Infinity, 0, -Infinity, 0.1);
    const s = createSampler({ seed: 18, topP: 0.999 });
    for (let k = 0; k < 2000; k++) expect([1, 3]).toContain(s(l, []));
  });
  it('handles a Qwen-sized vocabulary with top-k and top-p in bounded time', () => {
    const l = randomLogits(151_936, 19, 8);
    const s = createSampler({ topK: 50, topP: 0.9, temperature: 0.7, seed: 19 });
    const p = createSampler({ topP: 0.9, seed: 19 });
    const t0 = performance.now();
    for (let k = 0; k < 5; k++) { s(l, []); p(l, []); }
    expect(performance.now() - t0).toBeLessThan(5000);
    const top50 = new Set(Array.from(l.keys()).sort((a, b) => l[b]! - l[a]!).slice(0, 50));
    for (let k = 0; k < 100; k++) expect(top50.has(s(l, []))).toBe(true);
  });
});

describe('repetition penalty', () => {
  it('matches a hand-computed HF example', () => {
    // penalty 2: positive logits halve, negative ones double, each seen id once however often it occurred
    const out = applyRepetitionPenalty(row(2.0, -1.0, 0.5, 3.0, 0.0), [0, 1, 1, 1, 4, 99, -1], 2);
    expect(Array.from(out)).toEqual([1.0, -2.0, 0.5, 3.0, 0.0]);
  });
  it('does not modify the caller’s logits', () => {
    const l = row(4, 1);
    applyRepetitionPenalty(l, [0], 1.3);
    expect(Array.from(l)).toEqual([4, 1]);
  });
  it('changes the greedy choice when the leader was already generated', () => {
    const l = row(2.0, 1.5, -1);
    const s = createSampler({ temperature: 0, repetitionPenalty: 1.5 });
    expect(s(l, [])).toBe(0);
    expect(s(l, [0])).toBe(1); // 2.0 / 1.5 = 1.33 < 1.5
    expect(s(l, [0, 1])).toBe(0); // 1.33 > 1.0
  });
  it('shifts the sampled distribution to softmax of the penalized logits', () => {
    const l = row(1, 2, 0.5, -0.5);
    const penalized = row(1, 2 / 1.8, 0.5, -0.5 * 1.8);
    const s = createSampler({ repetitionPenalty: 1.8, seed: 21 });
    const f = new Float64Array(4);
    for (let i = 0; i < DRAWS; i++) f[s(l, [1, 3])]! += 1 / DRAWS;
    expect(maxAbsDiff(f, softmax(penalized))).toBeLessThanOrEqual(TOL);
  });
});

describe('options and bad input', () => {
  it('fills defaults', () => {
    expect(resolveSamplingOptions({ seed: 5 })).toEqual({
      temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 5,
    });
  });
  it.each<[string, SamplingOptions]>([
    ['topP 0', { topP: 0 }],
    ['topP negative', { topP: -0.1 }],
    ['topP > 1', { topP: 1.01 }],
    ['topP NaN', { topP: NaN }],
    ['negative temperature', { temperature: -0.5 }],
    ['infinite temperature', { temperature: Infinity }],
    ['negative topK', { topK: -1 }],
    ['fractional topK', { topK: 2.5 }],
    ['minP > 1', { minP: 1.5 }],
    ['repetitionPenalty 0', { repetitionPenalty: 0 }],
    ['negative seed', { seed: -1 }],
    ['fractional seed', { seed: 1.5 }],
  ])('%s → E_BAD_OPTION', (_name, opts) => {
    expect(codeOf(() => createSampler(opts))).toBe('E_BAD_OPTION');
  });
  it('reports every bad option at once', () => {
    try {
      createSampler({ topP: 0, temperature: -1, topK: -1 });
      expect.unreachable();
    } catch (e) {
      expect((e as NanomindError).detail.notes).toHaveLength(3);
    }
  });
  it('topK larger than the vocabulary means no truncation', () => {
    const l = row(0, 1, 2);
    const f = frequencies({ topK: 10, seed: 22 }, l, DRAWS);
    expect(maxAbsDiff(f, softmax(l))).toBeLessThanOrEqual(TOL);
  });
  it('rejects NaN, +Infinity, all -Infinity and empty logits with E_BAD_LOGITS', () => {
    const s = createSampler({ seed: 1 });
    expect(codeOf(() => s(row(0, NaN), []))).toBe('E_BAD_LOGITS');
    expect(codeOf(() => s(row(0, Infinity), []))).toBe('E_BAD_LOGITS');
    expect(codeOf(() => s(row(-Infinity, -Infinity), []))).toBe('E_BAD_LOGITS');
    expect(codeOf(() => s(new Float32Array(0), []))).toBe('E_BAD_LOGITS');
  });
});
