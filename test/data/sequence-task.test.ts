import { describe, expect, it } from 'vitest';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { generateSeqCls, SeqClsSpec, seqClsLabel, seqClsMarker } from '../../src/data/sequence-task.ts';

const small = SeqClsSpec.parse({
  dataset: 'seqcls',
  vocab: 12,
  seq_len: 10,
  classes: 4,
  train_size: 1003,
  test_size: 400,
  seed: 7,
});

describe('seqcls, the generated sequence task', () => {
  it('has defaults, and refuses a vocabulary with fewer content tokens than classes', () => {
    const spec = SeqClsSpec.parse({ dataset: 'seqcls' });
    expect(spec).toMatchObject({ vocab: 20, seq_len: 16, classes: 8, train_size: 8000, test_size: 2000 });
    const bad = SeqClsSpec.safeParse({ dataset: 'seqcls', vocab: 5, classes: 5 });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0].path).toEqual(['vocab']);
    expect(SeqClsSpec.safeParse({ dataset: 'seqcls', extra: 1 }).success).toBe(false);
  });

  it('is the same from the same seed, and another set from another seed', () => {
    const a = generateSeqCls(small);
    const b = generateSeqCls(small);
    const c = generateSeqCls({ ...small, seed: 8 });
    expect(a.train.inputs).toEqual(b.train.inputs);
    expect(a.train.labels).toEqual(b.train.labels);
    expect(a.test.inputs).toEqual(b.test.inputs);
    expect(a.train.inputs).not.toEqual(c.train.inputs);
    // Train and test are different draws, not the same stream twice.
    expect(a.test.inputs.subarray(0, 100)).not.toEqual(a.train.inputs.subarray(0, 100));
  });

  it('holds LabeledSets of whole sequences, ids in range, classes balanced', () => {
    const { train, test } = generateSeqCls(small);
    for (const [set, size] of [
      [train, 1003],
      [test, 400],
    ] as const) {
      expect(set.length).toBe(size);
      expect(set.featureSize).toBe(10);
      expect(set.numClasses).toBe(4);
      expect(set.inputs.length).toBe(size * 10);
      expect(set.inputs.every((v) => Number.isInteger(v) && v >= 0 && v < 12)).toBe(true);
      const counts = [0, 0, 0, 0];
      for (const label of set.labels) counts[label]++;
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
    // Batches come out as the loaders' other sets do.
    const batch = gatherBatch(train, [5, 0], 0, 2);
    expect(Array.from(batch.inputs.subarray(0, 10))).toEqual(Array.from(train.inputs.subarray(50, 60)));
    expect(batch.labels[1]).toBe(train.labels[0]);
  });

  it('labels every sample by the token after its one marker', () => {
    const { train } = generateSeqCls(small);
    const marker = seqClsMarker(12);
    const positions = new Set<number>();
    for (let s = 0; s < train.length; s++) {
      const tokens = train.inputs.subarray(s * 10, (s + 1) * 10);
      expect(tokens.filter((t) => t === marker).length).toBe(1);
      positions.add(tokens.indexOf(marker));
      expect(seqClsLabel(tokens, 12, 4)).toBe(train.labels[s]);
    }
    // The marker moves over every position but the last.
    expect([...positions].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(seqClsLabel([1, 2, 3], 12, 4)).toBeUndefined();
    expect(seqClsLabel([11, 2, 11, 5], 12, 4)).toBeUndefined();
    expect(seqClsLabel([1, 2, 11], 12, 4)).toBeUndefined();
  });

  it('gives no single position the answer: each alone predicts little better than chance', () => {
    const spec = { ...small, train_size: 4000 };
    const { train } = generateSeqCls(spec);
    for (let i = 0; i < spec.seq_len; i++) {
      let hits = 0;
      for (let s = 0; s < train.length; s++) {
        if (train.inputs[s * spec.seq_len + i] % spec.classes === train.labels[s]) hits++;
      }
      // Chance, plus the 1 in 9 samples whose marker sits just before position i.
      expect(hits / train.length).toBeLessThan(1 / 4 + 1 / 9 + 0.04);
    }
  });

  it('label_noise: the given share of training labels wrong, the same from the same seed, the test split clean', () => {
    expect(SeqClsSpec.parse({ dataset: 'seqcls' }).label_noise).toBe(0);
    const clean = generateSeqCls(small);
    const noisy = generateSeqCls({ ...small, label_noise: 0.3 });
    // Only labels change: the inputs and the test split are those of the clean set.
    expect(noisy.train.inputs).toEqual(clean.train.inputs);
    expect(noisy.test.inputs).toEqual(clean.test.inputs);
    expect(noisy.test.labels).toEqual(clean.test.labels);
    const wrong = (set: { length: number; inputs: Float32Array; labels: Uint8Array }) => {
      let n = 0;
      for (let s = 0; s < set.length; s++) {
        if (seqClsLabel(set.inputs.subarray(s * 10, (s + 1) * 10), 12, 4) !== set.labels[s]) n++;
      }
      return n;
    };
    expect(wrong(clean.train)).toBe(0);
    expect(wrong(noisy.train)).toBe(Math.round(0.3 * 1003));
    expect(wrong(noisy.test)).toBe(0);
    // Deterministic from the data seed; another seed corrupts other samples.
    expect(generateSeqCls({ ...small, label_noise: 0.3 }).train.labels).toEqual(noisy.train.labels);
    const other = generateSeqCls({ ...small, seed: 8, label_noise: 0.3 });
    expect(wrong(other.train)).toBe(Math.round(0.3 * 1003));
    // The wrong labels spread over the other classes: each of the 3 gets about a third of them.
    const spread = [0, 0, 0];
    for (let s = 0; s < noisy.train.length; s++) {
      const rule = clean.train.labels[s];
      const label = noisy.train.labels[s];
      if (label !== rule) spread[((label - rule + 4) % 4) - 1]++;
    }
    for (const n of spread) expect(n / wrong(noisy.train)).toBeCloseTo(1 / 3, 1);
    // The rule's class must stay the most frequent label of an input.
    expect(
      SeqClsSpec.safeParse({ dataset: 'seqcls', classes: 4, vocab: 12, label_noise: 0.75 }).success,
    ).toBe(false);
    expect(SeqClsSpec.safeParse({ dataset: 'seqcls', classes: 4, vocab: 12, label_noise: 0.7 }).success).toBe(
      true,
    );
    expect(SeqClsSpec.safeParse({ dataset: 'seqcls', label_noise: -0.1 }).success).toBe(false);
  });
});
