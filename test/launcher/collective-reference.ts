import { expect } from 'vitest';
import { shardRange, type WireDtype } from '../../src/comm/types.ts';
import { type Case, collectiveCases, inputFor } from '../fixtures/inputs.ts';

/** Largest rounding error one wire trip can add, relative to the magnitude of the values. */
const UNIT_ROUNDOFF: Record<WireDtype, number> = { fp32: 2 ** -23, fp16: 2 ** -11, bf16: 2 ** -8 };

function reference(c: Case, world: number, rank: number): Float32Array {
  const inputs = Array.from({ length: world }, (_, r) => inputFor(r, c.length, c.salt));
  const { start, end } = shardRange(c.length, world, rank);
  switch (c.kind) {
    case 'allReduce':
    case 'reduceScatter': {
      const op = c.kind === 'allReduce' ? c.op : 'sum';
      const out = new Float32Array(c.length).map((_, i) => {
        const xs = inputs.map((x) => x[i]);
        if (op === 'max') return Math.max(...xs);
        if (op === 'min') return Math.min(...xs);
        const s = xs.reduce((a, b) => a + b, 0);
        return op === 'avg' ? s / world : s;
      });
      return c.kind === 'allReduce' ? out : out.slice(start, end);
    }
    case 'allGather':
      return inputs.reduce((acc, x, r) => {
        const s = shardRange(c.length, world, r);
        acc.set(x.subarray(s.start, s.end), s.start);
        return acc;
      }, new Float32Array(c.length));
    case 'broadcast':
      return inputs[world - 1];
  }
}

/**
 * Checks what `test/fixtures/collectives.worker.ts` reported from every rank of a world of `world` against a
 * single-process reference: every op, wire dtype and odd length, the sub-groups and the tagged point-to-point.
 */
export function expectReferenceResults(
  reports: readonly { rank: number; data: unknown }[],
  world: number,
): void {
  const byRank = new Map(
    reports.map((r) => [r.rank, (r.data as { results: Record<string, number[]> }).results]),
  );
  expect([...byRank.keys()].sort()).toEqual(Array.from({ length: world }, (_, r) => r));

  for (const c of collectiveCases()) {
    for (let rank = 0; rank < world; rank++) {
      const got = byRank.get(rank)![c.key];
      const want = reference(c, world, rank);
      expect(got.length, `${c.key} rank ${rank} length`).toBe(want.length);
      // Each value crosses the wire at most `world` times, each trip rounding by at most one unit in 4 (|x| < 4·world).
      const tol = (world + 1) * UNIT_ROUNDOFF[c.dtype] * 4 * world;
      for (let i = 0; i < want.length; i++) {
        expect(
          Math.abs(got[i] - want[i]),
          `${c.key} rank ${rank} [${i}]: ${got[i]} vs ${want[i]}`,
        ).toBeLessThanOrEqual(tol);
      }
    }
    if (c.kind !== 'reduceScatter') {
      // Every rank ends with the same bits, whatever the wire dtype.
      for (let rank = 1; rank < world; rank++)
        expect(byRank.get(rank)![c.key], `${c.key} rank ${rank}`).toEqual(byRank.get(0)![c.key]);
    }
  }
  if (world >= 3) {
    for (let rank = 0; rank < world; rank++) {
      const members = Array.from({ length: world }, (_, r) => r).filter((r) => r % 2 === rank % 2);
      const want = new Float32Array(33).map((_, i) =>
        members.reduce((s, r) => s + inputFor(r, 33, 77)[i], 0),
      );
      const got = byRank.get(rank)!['subgroup/sum'];
      for (let i = 0; i < 33; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-5);
    }
  }
  if (world > 1) {
    for (let rank = 0; rank < world; rank++) {
      const prev = (rank + world - 1) % world;
      expect(byRank.get(rank)!['recv/1']).toEqual(Array.from(inputFor(prev, 13, 1)));
      expect(byRank.get(rank)!['recv/2']).toEqual(Array.from(inputFor(prev, 5, 2)));
    }
  }
}
