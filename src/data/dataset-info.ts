/**
 * What each dataset of a job file looks like, known without loading it: the launcher checks a job's model and
 * batch sizes against these before any worker starts. A test keeps them equal to what the loaders produce.
 */
import type { DataSpec } from '../config/schema.ts';
import { readFileData } from './file-data.ts';
import { readImageFolder } from './image-folder.ts';
import type { LabeledSet } from './labeled-set.ts';
import { MNIST_CLASSES, MNIST_PIXELS } from './mnist.ts';
import { readNpyData } from './npy-data.ts';

export interface DatasetInfo {
  /** Values per sample (the loaders' flat `featureSize`). */
  features: number;
  /** The natural shape of one sample, [height, width, channels] for images (what a CNN takes). */
  sampleShape: readonly number[];
  classes: number;
  trainSize: number;
  testSize: number;
  /** For token sequences: ids are 0 … vocab − 1 (what a Transformer's embedding must cover). */
  vocab?: number;
}

/** The datasets whose shape does not depend on their parameters. */
export const DATASETS: { readonly mnist: DatasetInfo } = {
  /** The project's fixed split of the mnist package's 10,000 digits (see mnist.ts). */
  mnist: {
    features: MNIST_PIXELS,
    sampleShape: [28, 28, 1],
    classes: MNIST_CLASSES,
    trainSize: 7996,
    testSize: 2004,
  },
};

/** The shape of loaded splits. */
function infoOf(train: LabeledSet, test: LabeledSet, sampleShape: readonly number[]): DatasetInfo {
  return {
    features: train.featureSize,
    sampleShape,
    classes: train.numClasses,
    trainSize: train.length,
    testSize: test.length,
  };
}

/** What the data a job names looks like; a file's (read here, refused here when bad) relative to `jobDir`. */
export function datasetInfo(spec: DataSpec, jobDir = process.cwd()): DatasetInfo {
  switch (spec.dataset) {
    case 'images': {
      const { train, test, sampleShape } = readImageFolder(spec, jobDir);
      return infoOf(train, test, sampleShape);
    }
    case 'file': {
      const { train, test } = readFileData(spec, jobDir);
      return infoOf(train, test, [train.featureSize]);
    }
    case 'npy': {
      const { train, test, sampleShape } = readNpyData(spec, jobDir);
      return infoOf(train, test, sampleShape);
    }
    case 'mnist':
      return DATASETS.mnist;
    case 'seqcls':
      // Generated to its spec: seq_len token ids per sample (see sequence-task.ts).
      return {
        features: spec.seq_len,
        sampleShape: [spec.seq_len],
        classes: spec.classes,
        trainSize: spec.train_size,
        testSize: spec.test_size,
        vocab: spec.vocab,
      };
  }
}
