import { describe, expect, it } from 'vitest';
import { DATASETS } from '../../src/data/datasets.ts';
import { loadMnist } from '../../src/data/mnist.ts';

describe('dataset shapes known without loading', () => {
  it('mnist: what the launcher checks against is what the loader produces', () => {
    const { train, test } = loadMnist();
    const info = DATASETS.mnist;
    expect(info.trainSize).toBe(train.length);
    expect(info.testSize).toBe(test.length);
    expect(info.features).toBe(train.featureSize);
    expect(info.sampleShape.reduce((a, b) => a * b, 1)).toBe(train.featureSize);
    expect(info.classes).toBe(train.numClasses);
  });
});
