/**
 * Low-rank factorisation on known values: the SVD of a diagonal and of a rank-2 matrix, the rank for an energy
 * share, and A·B as the best rank-r approximation (its Frobenius error the dropped singular values, Eckart–Young).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import { lowRankFactors, rankForEnergy, svd } from '../../src/engine/low-rank.ts';

function product(a: Float32Array, b: Float32Array, m: number, r: number, n: number): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += a[i * r + k] * b[k * n + j];
      out[i * n + j] = s;
    }
  return out;
}

describe('SVD and low-rank factors', () => {
  it('a diagonal: its entries, sorted, are the singular values', () => {
    const w = Float32Array.from([0, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0]); // 4×3, diag (0, 3, 5) in rows 0..2
    w[0] = 1;
    const { s } = svd(w, 4, 3);
    expect(Array.from(s).map((x) => Number(x.toFixed(6)))).toEqual([5, 3, 1]);
  });

  it('a rank-2 matrix is rebuilt exactly from rank 2, wide or tall', () => {
    for (const [m, n] of [
      [6, 4],
      [4, 6],
    ]) {
      const rng = new Rng(3);
      const u = Float32Array.from({ length: m * 2 }, () => rng.next() - 0.5);
      const v = Float32Array.from({ length: 2 * n }, () => rng.next() - 0.5);
      const w = product(u, v, m, 2, n);
      const { a, b } = lowRankFactors(w, m, n, 2);
      const back = product(a, b, m, 2, n);
      for (let i = 0; i < w.length; i++) expect(back[i]).toBeCloseTo(w[i], 5);
    }
  });

  it('rank r leaves exactly the dropped singular values as its error (Eckart–Young)', () => {
    const [m, n] = [30, 20];
    const rng = new Rng(9);
    const w = Float32Array.from({ length: m * n }, () => rng.next() - 0.5);
    const { s } = svd(w, m, n);
    for (const r of [1, 5, 12]) {
      const { a, b } = lowRankFactors(w, m, n, r);
      const approx = product(a, b, m, r, n);
      const error = Math.sqrt(w.reduce((e, x, i) => e + (x - approx[i]) ** 2, 0));
      const dropped = Math.sqrt(Array.from(s.slice(r)).reduce((e, x) => e + x * x, 0));
      expect(error).toBeCloseTo(dropped, 4);
    }
  });

  it('the rank for an energy share: the fewest singular values whose squares reach it', () => {
    const s = Float64Array.from([4, 2, 1, 1]); // squares 16, 4, 1, 1 of 22
    expect(rankForEnergy(s, 0.7)).toBe(1);
    expect(rankForEnergy(s, 0.9)).toBe(2);
    expect(rankForEnergy(s, 1)).toBe(4);
  });
});
