import type { DataSpec } from '../config/schema.ts';
import { readFileData } from './file-data.ts';
import { readImageFolder } from './image-folder.ts';
import type { LabeledSet } from './labeled-set.ts';
import { loadMnist } from './mnist.ts';
import { readNpyData } from './npy-data.ts';
import { generateSeqCls } from './sequence-task.ts';

/** The train and test splits a job's `data` section names (a file's path relative to `jobDir`). */
export function loadDataset(spec: DataSpec, jobDir: string): { train: LabeledSet; test: LabeledSet } {
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
