import type { DataSpec } from '../config/schema.ts';
import { readFileData } from './file-data.ts';
import { readImageFolder } from './image-folder.ts';
import type { LabeledSet } from './labeled-set.ts';
import { loadMnist } from './mnist.ts';
import { readNpyData } from './npy-data.ts';
import { generateSeqCls } from './sequence-task.ts';

/** A run's data, loaded: its train and test splits, and how the sampler reads the training split. */
export interface LoadedData {
  readonly train: LabeledSet;
  readonly test: LabeledSet;
  readonly shuffle: boolean;
  readonly drop_last: boolean;
}

/** The splits a job's `data` section names (a file's path relative to `jobDir`), with its sampler keys. */
export function loadDataset(spec: DataSpec, jobDir: string): LoadedData {
  const { shuffle, drop_last } = spec;
  const { train, test } = splits(spec, jobDir);
  return { train, test, shuffle, drop_last };
}

function splits(spec: DataSpec, jobDir: string): { train: LabeledSet; test: LabeledSet } {
  switch (spec.dataset) {
    case 'file':
      return readFileData(spec, jobDir);
    case 'images':
      return readImageFolder(spec, jobDir);
    case 'npy':
      return readNpyData(spec, jobDir);
    case 'mnist':
      return loadMnist();
    case 'seqcls':
      return generateSeqCls(spec);
  }
}
