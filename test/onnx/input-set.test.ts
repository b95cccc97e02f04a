/** InputSet against a plain JS Set of indices (the oracle): no 32-input limit, equality ignores word count. */
import { describe, expect, it } from 'vitest';
import { InputSet } from '../../src/onnx/input-set.js';
import { mulberry32 } from '../../src/util/prng.js';

describe('InputSet', () => {
  it('holds indices past 31 (where a number bit mask wraps) and agrees with a Set on union / subset / intersects', () => {
    // The bug this replaces: 1 << 32 === 1, so input 32 aliased input 0.
    expect(1 << 32).toBe(1 << 0);
    expect(InputSet.of(32).equals(InputSet.of(0))).toBe(false);
    expect(InputSet.of(0, 31, 32, 63, 64, 100).indices()).toEqual([0, 31, 32, 63, 64, 100]);
    const rand = mulberry32(7);
    const pick = () => [...new Set(Array.from({ length: Math.floor(rand() * 6) }, () => Math.floor(rand() * 90)))];
    for (let t = 0; t < 200; t++) {
      const a = pick(), b = pick();
      const A = InputSet.of(...a), B = InputSet.of(...b);
      const sa = new Set(a), sb = new Set(b);
      expect(A.union(B).indices()).toEqual([...new Set([...a, ...b])].sort((x, y) => x - y));
      expect(A.intersects(B)).toBe(a.some((x) => sb.has(x)));
      expect(A.isSubsetOf(B)).toBe(a.every((x) => sb.has(x)));
      expect(A.equals(B)).toBe(a.length === sb.size && a.every((x) => sb.has(x)) && b.every((x) => sa.has(x)));
      expect(A.isEmpty()).toBe(a.length === 0);
      for (const i of [0, 31, 32, 33, 64, 89]) expect(A.has(i)).toBe(sa.has(i));
    }
    // Different word counts, same members.
    expect(InputSet.of(3).union(InputSet.of(70)).union(InputSet.of(3)).equals(InputSet.of(70, 3))).toBe(true);
    expect(InputSet.EMPTY.equals(InputSet.of(5).union(InputSet.EMPTY).union(InputSet.EMPTY))).toBe(false);
  });
});
