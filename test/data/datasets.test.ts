import { describe, expect, it } from 'vitest';
import { DataSpec } from '../../src/config/schema.ts';
import { DATASETS, datasetInfo } from '../../src/data/dataset-info.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { generateSeqCls } from '../../src/data/sequence-task.ts';

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

describe('seqcls: the info follows the spec', () => {
  it('what the launcher checks against is what the generator produces', () => {
    const spec = DataSpec.parse({
      dataset: 'seqcls',
      vocab: 12,
      seq_len: 7,
      classes: 5,
      train_size: 300,
      test_size: 40,
    });
    if (spec.dataset !== 'seqcls') throw new Error('parsed as another dataset');
    const { train, test } = generateSeqCls(spec);
    const info = datasetInfo(spec);
    expect(info.trainSize).toBe(train.length);
    expect(info.testSize).toBe(test.length);
    expect(info.features).toBe(train.featureSize);
    expect(info.classes).toBe(train.numClasses);
    expect(Math.max(...train.inputs)).toBe((info.vocab ?? 0) - 1);
  });
});
