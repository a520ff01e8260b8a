import { Rng } from '../base/rng.ts';
import type { LabeledSet } from './labeled-set.ts';
import { refuse } from './refuse.ts';

/**
 * One source's samples split into train and test by `test_fraction`: a choice of round(n · fraction) samples drawn
 * from `split_seed` (the same split on every rank and every run); each split keeps the source's order.
 */
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
  const pick = (want: number): LabeledSet => {
    const rows = Array.from({ length: n }, (_, i) => i).filter((i) => inTest[i] === want);
    const f = all.featureSize;
    const inputs = new Float32Array(rows.length * f);
    rows.forEach((r, i) => {
      inputs.set(all.inputs.subarray(r * f, (r + 1) * f), i * f);
    });
    const labels = Uint8Array.from(rows, (r) => all.labels[r]);
    return { length: rows.length, featureSize: f, numClasses: all.numClasses, inputs, labels };
  };
  return { train: pick(0), test: pick(1) };
}
