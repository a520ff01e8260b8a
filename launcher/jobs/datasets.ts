import type { DataSpec } from '../../src/config/schema.ts';
import type { LabeledSet } from '../../src/data/dataset.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { generateSeqCls } from '../../src/data/sequence-task.ts';

/** The train and test splits a job's `data` section names. */
export function loadDataset(spec: DataSpec): { train: LabeledSet; test: LabeledSet } {
  switch (spec.dataset) {
    case 'mnist':
      return loadMnist();
    case 'seqcls':
      return generateSeqCls(spec);
  }
}
