import { describe, expect, it } from 'vitest';
import { DistributedSampler } from '../../src/data/sampler.ts';

function epochIndices(
  length: number,
  world: number,
  opts: { dropLast: boolean; shuffle?: boolean; seed?: number; epoch?: number },
) {
  return Array.from({ length: world }, (_, rank) => {
    const s = new DistributedSampler({
      length,
      world,
      rank,
      seed: opts.seed ?? 7,
      shuffle: opts.shuffle ?? true,
      dropLast: opts.dropLast,
    });
    s.setEpoch(opts.epoch ?? 0);
    return Array.from(s.indices());
  });
}

describe('DistributedSampler', () => {
  for (const world of [1, 2, 3]) {
    for (const length of [10, 11, 12]) {
      it(`world ${world}, length ${length}, drop_last: disjoint, equal and as torch sizes them`, () => {
        const parts = epochIndices(length, world, { dropLast: true });
        const expected = length % world === 0 ? length / world : Math.ceil((length - world) / world);
        for (const p of parts) expect(p).toHaveLength(expected);
        const all = parts.flat();
        expect(new Set(all).size).toBe(all.length);
        for (const i of all) expect(i >= 0 && i < length).toBe(true);
        expect(all.length).toBe(length - (length % world));
      });

      it(`world ${world}, length ${length}, padded: covers everything, repeats only the padding`, () => {
        const parts = epochIndices(length, world, { dropLast: false });
        const n = Math.ceil(length / world);
        for (const p of parts) expect(p).toHaveLength(n);
        const all = parts.flat();
        expect(new Set(all).size).toBe(length);
        expect(all.length - length).toBe(n * world - length);
      });
    }
  }

  it('takes the strided slice indices[rank::world] of one shared order', () => {
    const [r0, r1, r2] = epochIndices(9, 3, { dropLast: true, shuffle: false });
    expect(r0).toEqual([0, 3, 6]);
    expect(r1).toEqual([1, 4, 7]);
    expect(r2).toEqual([2, 5, 8]);
    // Padding wraps around to the start, as torch does.
    expect(epochIndices(4, 3, { dropLast: false, shuffle: false })).toEqual([
      [0, 3],
      [1, 0],
      [2, 1],
    ]);
  });

  it('is deterministic per (seed, epoch) and differs across epochs and seeds', () => {
    const a = epochIndices(100, 2, { dropLast: true, epoch: 3 });
    expect(epochIndices(100, 2, { dropLast: true, epoch: 3 })).toEqual(a);
    expect(epochIndices(100, 2, { dropLast: true, epoch: 4 })).not.toEqual(a);
    expect(epochIndices(100, 2, { dropLast: true, epoch: 3, seed: 8 })).not.toEqual(a);
    const sorted = [...a[0], ...a[1]].sort((x, y) => x - y);
    expect(sorted).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('rejects a rank outside the world', () => {
    expect(() => new DistributedSampler({ length: 10, world: 2, rank: 2 })).toThrow(RangeError);
  });
});
