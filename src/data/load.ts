import type { DataSpec } from '../config/schema.ts';
import type { LabeledSet } from './labeled-set.ts';
import { loadMnist } from './mnist.ts';
import { generateSeqCls } from './sequence-task.ts';

/** The train and test splits a job's `data` section names. */
export function loadDataset(spec: DataSpec): { train: LabeledSet; test: LabeledSet } {
  switch (spec.dataset) {
    case 'mnist':
      return loadMnist();
    case 'seqcls':
      return generateSeqCls(spec);
  }
}
