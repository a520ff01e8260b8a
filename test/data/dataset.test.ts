/**
 * Data of the user's own as objects: a Dataset read through get(i) (only the samples asked for, tensors it makes
 * disposed, splits as index views), a tf.data.Dataset read into memory, and every kind of bad sample refused naming
 * the sample.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Dataset, readDataset, readTfDataset, type Sample } from '../../src/data/dataset.ts';
import { gatherBatch, IndexView } from '../../src/data/labeled-set.ts';
import { refusal } from './refusal.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** `n` samples, sample i's inputs [10·i, 10·i + 1], label i mod 3; `calls` lists every get(i) in order. */
function counted(n: number, sample: (i: number) => Sample = (i) => ({ x: [10 * i, 10 * i + 1], y: i % 3 })) {
  const calls: number[] = [];
  const ds: Dataset = {
    length: n,
    get(i) {
      calls.push(i);
      return sample(i);
    },
  };
  return { ds, calls };
}

describe('a Dataset read through get(i)', () => {
  it('reads every label once, then only the samples a batch asks for', () => {
    const { ds, calls } = counted(10);
    const { set, sampleShape } = readDataset(ds, 'mine', 3);
    expect(calls).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(sampleShape).toEqual([2]);
    expect([set.length, set.featureSize, set.numClasses]).toEqual([10, 2, 3]);
    expect(Array.from(set.labels)).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
    calls.length = 0;
    const batch = gatherBatch(set, [4, 8, 1, 7], 1, 2);
    expect(calls).toEqual([8, 1]);
    expect(Array.from(batch.inputs)).toEqual([80, 81, 10, 11]);
    expect(Array.from(batch.labels)).toEqual([2, 1]);
  });

  it('splits as an index view that reads the base samples of its rows only', () => {
    const { ds, calls } = counted(10);
    const view = readDataset(ds, 'mine', 3).set.subset([9, 3, 5]);
    expect(view).toBeInstanceOf(IndexView);
    expect(Array.from(view.labels)).toEqual([0, 0, 2]);
    calls.length = 0;
    expect(Array.from(view.readInputs([2, 0], 0, 2))).toEqual([50, 51, 90, 91]);
    expect(calls).toEqual([5, 9]);
  });

  it('reads a tensor of any shape flat, disposing the tensors get(i) makes and keeping the ones it holds', () => {
    const held = tf.tensor([1, 2, 3, 4], [2, 2]);
    const { ds } = counted(4, (i) => ({
      x: i === 0 ? held : tf.tensor([i, i, i, i], [2, 2, 1]),
      y: i % 2,
    }));
    const before = tf.memory().numTensors;
    const { set, sampleShape } = readDataset(ds, 'mine', 2);
    expect(sampleShape).toEqual([2, 2]);
    expect(Array.from(set.readInputs([0, 3], 0, 2))).toEqual([1, 2, 3, 4, 3, 3, 3, 3]);
    expect(tf.memory().numTensors).toBe(before);
    expect(held.isDisposed).toBe(false);
    held.dispose();
  });

  it.each([
    [
      'a ragged sample, when the labels are read',
      counted(5, (i) => ({ x: i === 3 ? [1, 2, 3] : [1, 2], y: 0 })).ds,
      'mine: sample 3: x has 3 values, sample 0 has 2: every sample is the same size',
    ],
    [
      'a label outside the classes',
      counted(5, (i) => ({ x: [1, 2], y: i === 4 ? 3 : 0 })).ds,
      'mine: sample 4: y is 3, outside the 3 classes (labels 0 … 2)',
    ],
    [
      'a label that is not a whole number',
      counted(5, (i) => ({ x: [1, 2], y: i === 2 ? 1.5 : 0 })).ds,
      'mine: sample 2: y is 1.5: a label is a class index, a whole number ≥ 0',
    ],
    [
      'a sample that is not {x, y}',
      counted(5, (i) => (i === 1 ? ([1, 2] as unknown as Sample) : { x: [1, 2], y: 0 })).ds,
      'mine: sample 1: get(1) returned an array: a sample is {x, y}',
    ],
    [
      'inputs that are not numbers',
      counted(5, () => ({ x: 'ab' as unknown as number[], y: 0 })).ds,
      'mine: sample 0: x is "ab": give numbers (an array, a typed array) or a tf.Tensor',
    ],
    [
      'an empty set',
      counted(0).ds,
      'mine: length is 0: a Dataset holds a whole number of samples, at least 1',
    ],
  ])('refuses %s', async (_, ds, line) => {
    expect(await refusal(() => readDataset(ds, 'mine', 3))).toBe(line);
  });

  it('refuses a sample whose size changes, and a value that is not finite, when a batch reads it', async () => {
    let reading = false;
    const { ds } = counted(5, (i) => ({
      x: reading && i === 2 ? [1, 2, 3] : reading && i === 4 ? [1, Number.NaN] : [1, 2],
      y: 0,
    }));
    const { set } = readDataset(ds, 'mine', 3);
    reading = true;
    expect(Array.from(set.readInputs([0, 1], 0, 2))).toEqual([1, 2, 1, 2]);
    expect(await refusal(() => set.readInputs([1, 2], 0, 2))).toBe(
      'mine: sample 2: x has 3 values, sample 0 has 2: every sample is the same size',
    );
    expect(await refusal(() => set.readInputs([4], 0, 1))).toBe(
      'mine: sample 4: x[1] is NaN: inputs are finite numbers, flat (or a tf.Tensor of any shape)',
    );
  });
});

describe('a tf.data.Dataset, read into memory', () => {
  it('reads {xs, ys} or {x, y} elements in order, disposing the tensors it hands out', async () => {
    const xs = [tf.tensor([1, 2, 3, 4], [2, 2]), tf.tensor([5, 6, 7, 8], [2, 2])];
    const ds = tf.data.array([
      { xs: xs[0], ys: tf.scalar(1, 'int32') },
      { xs: xs[1], ys: tf.scalar(0, 'int32') },
    ]);
    const before = tf.memory().numTensors;
    const { set, sampleShape } = await readTfDataset(ds, 'mine', 2);
    expect(tf.memory().numTensors).toBe(before);
    expect(sampleShape).toEqual([2, 2]);
    expect(Array.from(set.labels)).toEqual([1, 0]);
    expect(Array.from(set.readInputs([1, 0], 0, 2))).toEqual([5, 6, 7, 8, 1, 2, 3, 4]);

    const plain = await readTfDataset(tf.data.array([{ x: [1, 2, 3], y: 2 }]), 'mine', 3);
    expect(Array.from(plain.set.readInputs([0], 0, 1))).toEqual([1, 2, 3]);
    expect(Array.from(plain.set.labels)).toEqual([2]);
  });

  it.each([
    [
      'one-hot labels',
      () => tf.data.array([{ xs: tf.tensor1d([1, 2]), ys: tf.tensor1d([0, 1, 0]) }]),
      'mine: element 0: y has 3 values: a label is one class index (not one-hot, not a batch of labels)',
    ],
    [
      'a batched dataset',
      () =>
        tf.data
          .array([0, 1, 2, 3].map((i) => ({ xs: tf.tensor1d([i, i]), ys: tf.scalar(i % 2, 'int32') })))
          .batch(2),
      'mine: element 0: y has 2 values: a label is one class index (not one-hot, not a batch of labels)',
    ],
    [
      'elements of another kind',
      () => tf.data.array([1, 2, 3]),
      'mine: element 0: the element is 1: give {xs, ys} (or {x, y}), one sample each',
    ],
    [
      'an infinite dataset',
      () => tf.data.array([{ x: [1], y: 0 }]).repeat(),
      'mine: the tf.data.Dataset is infinite (repeat() without a count): give a finite one',
    ],
    ['an empty dataset', () => tf.data.array([]), 'mine: the tf.data.Dataset has no elements'],
  ])('refuses %s', async (_, make, line) => {
    expect(await refusal(() => readTfDataset(make() as tf.data.Dataset<tf.TensorContainer>, 'mine', 3))).toBe(
      line,
    );
  });
});
