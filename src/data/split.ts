import { Rng } from '../base/rng.ts';
import type { LabeledSet, MemorySet } from './labeled-set.ts';
import { refuse } from './refuse.ts';

/**
 * One source's samples split into train and test by `test_fraction`: a choice of round(n · fraction) samples drawn
 * from `split_seed` (the same split on every rank and every run); each split keeps the source's order. Each split
 * is the source's `subset`: a copy of an in-memory set, an index view of one read from disk.
 */
export function splitByFraction(
  spec: { readonly test_fraction: number; readonly split_seed: number },
  source: string,
  all: MemorySet,
): { train: MemorySet; test: MemorySet };
export function splitByFraction(
  spec: { readonly test_fraction: number; readonly split_seed: number },
  source: string,
  all: LabeledSet,
): { train: LabeledSet; test: LabeledSet };
export function splitByFraction(
  spec: { readonly test_fraction: number; readonly split_seed: number },
  source: string,
  all: LabeledSet,
): { train: LabeledSet; test: LabeledSet } {
  const n = all.length;
  const testCount = Math.round(n * spec.test_fraction);
  if (testCount < 1 || testCount > n - 1) {
    refuse(source, undefined, `${n} samples cannot be split with test_fraction ${spec.test_fraction}`);
  }
  const inTest = new Uint8Array(n);
  for (const i of new Rng(spec.split_seed).permutation(n).subarray(0, testCount)) inTest[i] = 1;
  const pick = (want: number) => {
    const rows = new Int32Array(want === 1 ? testCount : n - testCount);
    let k = 0;
    for (let i = 0; i < n; i++) if (inTest[i] === want) rows[k++] = i;
    return all.subset(rows);
  };
  return { train: pick(0), test: pick(1) };
}
