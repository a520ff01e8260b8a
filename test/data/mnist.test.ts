import { describe, expect, it } from 'vitest';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { loadMnist, MNIST_CLASSES, MNIST_PIXELS } from '../../src/data/mnist.ts';

describe('mnist split', () => {
  const { train, test, perDigit } = loadMnist();

  it('is the project split: 7,996 train / 2,004 test', () => {
    expect(train.length).toBe(7996);
    expect(test.length).toBe(2004);
    expect(train.inputs.length).toBe(7996 * MNIST_PIXELS);
    expect(test.inputs.length).toBe(2004 * MNIST_PIXELS);
  });

  it('splits each digit at floor(80%) of its images, train first', () => {
    for (const { train: nTrain, test: nTest } of perDigit) {
      expect(nTrain).toBe(Math.floor((nTrain + nTest) * 0.8));
    }
    // Digits lie back to back in each split: the label changes exactly at the per-digit boundaries.
    let at = 0;
    for (const { digit, train: nTrain } of perDigit) {
      expect(train.labels[at]).toBe(digit);
      expect(train.labels[at + nTrain - 1]).toBe(digit);
      at += nTrain;
    }
    at = 0;
    for (const { digit, test: nTest } of perDigit) {
      expect(test.labels[at]).toBe(digit);
      expect(test.labels[at + nTest - 1]).toBe(digit);
      at += nTest;
    }
    expect(new Set(train.labels).size).toBe(MNIST_CLASSES);
  });

  it('keeps pixels in [0, 1] and caches the parse', () => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of test.inputs) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThanOrEqual(1);
    expect(loadMnist().train).toBe(train);
  });

  it('gathers a batch by indices', () => {
    const b = gatherBatch(test, [5, 2003], 0, 2);
    expect(b.labels).toEqual(new Int32Array([test.labels[5], test.labels[2003]]));
    expect(b.inputs.subarray(MNIST_PIXELS)).toEqual(test.inputs.subarray(2003 * MNIST_PIXELS));
    expect(() => gatherBatch(test, [1, 2], 1, 2)).toThrow(RangeError);
  });
});
