/**
 * Next-token selection from one row of vocabulary logits.
 *
 * Processing order follows Hugging Face `generate` so the same options give the same distribution:
 * repetition penalty → temperature → top-k → top-p → min-p → draw. Ties are always broken towards the
 * lowest token id so greedy decoding matches `argmax` in numpy/PyTorch.
 *
 * The PRNG is mulberry32 (32-bit state): small, fast and good enough for drawing one token per step;
 * a sampler created with the same seed replays the same tokens for the same logits.
 */
import { fail } from '../../errors.js';
import { mulberry32 } from '../../util/prng.js';

export interface SamplingOptions {
  /** 0 = greedy. Default 1. */
  readonly temperature?: number;
  /** Keep the k most likely tokens; 0 = off. Default 0. */
  readonly topK?: number;
  /** Nucleus: keep the smallest set whose probability reaches p; 1 = off. Default 1. */
  readonly topP?: number;
  /** Drop tokens less likely than minP × the most likely one; 0 = off. Default 0. */
  readonly minP?: number;
  /** HF CTRL-style penalty for ids already in the sequence; 1 = off. Default 1. */
  readonly repetitionPenalty?: number;
  /** PRNG seed (uint32). Absent: a random seed, readable from `sampler.seed` to replay the run. */
  readonly seed?: number;
}

export type ResolvedSamplingOptions = Required<SamplingOptions>;

export interface Sampler {
  (logits: Float32Array, previousTokens: readonly number[]): number;
  readonly options: ResolvedSamplingOptions;
  readonly seed: number;
}

/** Checks every option, reports all problems at once, and fills defaults. */
export function resolveSamplingOptions(opts: SamplingOptions = {}): ResolvedSamplingOptions {
  const o = {
    temperature: opts.temperature ?? 1,
    topK: opts.topK ?? 0,
    topP: opts.topP ?? 1,
    minP: opts.minP ?? 0,
    repetitionPenalty: opts.repetitionPenalty ?? 1,
    seed: opts.seed ?? randomSeed(),
  };
  const issues: string[] = [];
  if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) issues.push(`temperature must be ≥ 0, got ${o.temperature}`);
  if (!(Number.isSafeInteger(o.topK) && o.topK >= 0)) issues.push(`topK must be an integer ≥ 0, got ${o.topK}`);
  if (!(o.topP > 0 && o.topP <= 1)) issues.push(`topP must be in (0, 1], got ${o.topP}`);
  if (!(o.minP >= 0 && o.minP <= 1)) issues.push(`minP must be in [0, 1], got ${o.minP}`);
  if (!(Number.isFinite(o.repetitionPenalty) && o.repetitionPenalty > 0))
    issues.push(`repetitionPenalty must be > 0, got ${o.repetitionPenalty}`);
  if (!(Number.isInteger(o.seed) && o.seed >= 0 && o.seed <= 0xffffffff))
    issues.push(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (issues.length)
    throw fail('E_BAD_OPTION', `bad sampling options: ${issues.join('; ')}`, { notes: issues });
  return Object.freeze(o);
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

export { mulberry32 };

/**
 * HF `RepetitionPenaltyLogitsProcessor`: each distinct id seen before is penalized once, however often
 * it occurred — positive logits are divided by the penalty, the others multiplied, so the token always
 * becomes less likely. Returns a copy; ids outside the vocabulary are ignored.
 */
export function applyRepetitionPenalty(logits: Float32Array, previous: readonly number[], penalty: number): Float32Array {
  const out = logits.slice();
  if (penalty === 1) return out;
  for (const id of new Set(previous)) {
    if (!Number.isInteger(id) || id < 0 || id >= out.length) continue;
    const l = logits[id]!;
    out[id] = l > 0 ? l / penalty : l * penalty;
  }
  return out;
}

/** softmax(logits / temperature) in float64, for reference and tests. */
export function softmax(logits: ArrayLike<number>, temperature = 1): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp((logits[i]! - max) / temperature);
  for (let i = 0; i < p.length; i++) p[i]! /= sum;
  return p;
}

/** Index of the largest logit, lowest id on ties; NaN never wins. */
export function argmax(logits: ArrayLike<number>): number {
  let best = -1;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bestV || (best < 0 && v === -Infinity)) { best = i; bestV = v; }
  }
  return best;
}

export function createSampler(opts: SamplingOptions = {}): Sampler {
  const o = resolveSamplingOptions(opts);
  const rand = mulberry32(o.seed);
  const sample = (logits: Float32Array, previousTokens: readonly number[]): number => {
    checkLogits(logits);
    const l = applyRepetitionPenalty(logits, previousTokens, o.repetitionPenalty);
    if (o.temperature === 0 || o.topK === 1) return argmax(l);
    return draw(l, o, rand());
  };
  return Object.assign(sample, { options: o, seed: o.seed });
}

function checkLogits(logits: Float32Array): void {
  if (logits.length === 0) throw fail('E_BAD_LOGITS', 'cannot sample from an empty logits row');
  let finite = false;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (Number.isNaN(v) || v === Infinity)
      throw fail('E_BAD_LOGITS', `logit ${i} is ${v}`, { hint: 'the model produced non-finite logits; check the brick outputs' });
    if (v !== -Infinity) finite = true;
  }
  if (!finite) throw fail('E_BAD_LOGITS', 'every logit is -Infinity: no token can be sampled');
}

/**
 * One draw with the uniform `u` in [0, 1). Candidates are ids with their unnormalized weights
 * exp((l - max) / T); the most likely token has weight 1, which makes min-p a plain threshold.
 */
function draw(l: Float32Array, o: ResolvedSamplingOptions, u: number): number {
  // top-k returns its ids sorted by descending logit, so the nucleus below is a prefix of them.
  let ids = o.topK > 0 && o.topK < l.length ? topKIds(l, o.topK) : allIds(l.length);
  const sorted = ids.length < l.length;
  let w = weightsOf(l, ids, o.temperature);
  let total = 0;
  for (let i = 0; i < w.length; i++) total += w[i]!;
  let n = ids.length;

  if (o.topP < 1) {
    const need = o.topP * total;
    if (!sorted) ({ ids, w } = headCandidates(l, w, need, o.temperature));
    n = ids.length;
    let cum = 0;
    let keep = 0;
    while (keep < n) {
      cum += w[keep++]!;
      if (cum >= need) break;
    }
    n = keep;
    total = cum;
  }

  if (o.minP > 0) {
    total = 0;
    for (let i = 0; i < n; i++) {
      if (w[i]! < o.minP) w[i] = 0;
      total += w[i]!;
    }
  }

  const target = u * total;
  let cum = 0;
  let last = -1;
  for (let i = 0; i < n; i++) {
    if (w[i] === 0) continue;
    cum += w[i]!;
    last = i;
    if (target < cum) return ids[i]!;
  }
  return ids[last]!; // rounding left target ≥ cum: the last kept candidate
}

/** exp((l - max) / T) per candidate: unnormalized probabilities, the best one exactly 1. */
function weightsOf(l: Float32Array, ids: Int32Array, T: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < ids.length; i++) max = Math.max(max, l[ids[i]!]!);
  const w = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) w[i] = Math.exp((l[ids[i]!]! - max) / T);
  return w;
}

const BUCKETS = 256;
const BUCKETS_PER_NAT = 4; // 64 nats deep: anything below e^-64 of the top token shares the last bucket

/**
 * The nucleus lies among the heaviest tokens, so rather than sorting a 150k vocabulary every step, bucket
 * tokens by how far their logit lies below the top one, find the fewest leading buckets that already hold
 * the mass `need`, and sort only their tokens. Bucketing is monotone in the logit, so those tokens form a
 * prefix of the sorted order and the prefix walk in `draw` gives exactly the full-sort answer.
 * `w` is indexed by token id here.
 */
function headCandidates(l: Float32Array, w: Float64Array, need: number, T: number): { ids: Int32Array; w: Float64Array } {
  let max = -Infinity;
  for (let i = 0; i < l.length; i++) if (l[i]! > max) max = l[i]!;
  const scale = BUCKETS_PER_NAT / T;
  const bucket = new Uint8Array(l.length);
  const mass = new Float64Array(BUCKETS);
  for (let i = 0; i < l.length; i++) {
    const b = Math.min(BUCKETS - 1, Math.floor((max - l[i]!) * scale));
    bucket[i] = b;
    mass[b]! += w[i]!;
  }
  let last = 0;
  for (let cum = mass[0]!; cum < need && last < BUCKETS - 1; ) cum += mass[++last]!;
  let count = 0;
  for (let i = 0; i < l.length; i++) if (bucket[i]! <= last) count++;
  const ids = new Int32Array(count);
  for (let i = 0, k = 0; i < l.length; i++) if (bucket[i]! <= last) ids[k++] = i;
  sortByLogit(l, ids);
  const wSorted = new Float64Array(count);
  for (let i = 0; i < count; i++) wSorted[i] = w[ids[i]!]!;
  return { ids, w: wSorted };
}

const allIds = (n: number): Int32Array => {
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = i;
  return ids;
};

/** Descending logit, ascending id on ties. */
const before = (l: Float32Array, a: number, b: number): boolean => l[a]! > l[b]! || (l[a] === l[b] && a < b);

/** The k best ids in order, via a size-k min-heap: O(V log k) instead of sorting the whole vocabulary. */
function topKIds(l: Float32Array, k: number): Int32Array {
  const heap = new Int32Array(k); // heap[0] is the worst of the current best k
  let size = 0;
  const worse = (a: number, b: number) => before(l, b, a);
  const siftDown = (i: number) => {
    for (;;) {
      const c1 = 2 * i + 1, c2 = c1 + 1;
      let m = i;
      if (c1 < size && worse(heap[c1]!, heap[m]!)) m = c1;
      if (c2 < size && worse(heap[c2]!, heap[m]!)) m = c2;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let id = 0; id < l.length; id++) {
    if (size < k) {
      let i = size++;
      heap[i] = id;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!worse(heap[i]!, heap[p]!)) break;
        [heap[i], heap[p]] = [heap[p]!, heap[i]!];
        i = p;
      }
    } else if (before(l, id, heap[0]!)) {
      heap[0] = id;
      siftDown(0);
    }
  }
  return sortByLogit(l, heap);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const ID_SPAN = 2 ** 21; // 32 bits of order-preserving logit + 21 bits of id fit a float64 exactly

/**
 * Sorts ids in place by descending logit, ascending id on ties. A comparator sort of 20k+ ids costs
 * tens of ms per token; packing (logit, id) into one float64 key lets the engine's native numeric sort
 * do it in a few.
 */
function sortByLogit(l: Float32Array, ids: Int32Array): Int32Array {
  if (l.length > ID_SPAN) return ids.sort((a, b) => (before(l, a, b) ? -1 : before(l, b, a) ? 1 : 0));
  const keys = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    f32[0] = l[ids[i]!]! + 0; // + 0 turns -0 into +0 so both tie, as they compare equal
    const bits = u32[0]!;
    const ascending = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
    keys[i] = (0xffffffff - ascending) * ID_SPAN + ids[i]!;
  }
  keys.sort();
  for (let i = 0; i < ids.length; i++) ids[i] = keys[i]! % ID_SPAN;
  return ids;
}
