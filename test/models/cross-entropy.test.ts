import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CrossEntropy, softmaxCrossEntropy } from '../../src/objectives/cross-entropy.ts';

describe('softmax cross-entropy from logits', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('is −mean log softmax of the label, and its gradient is (softmax − onehot)/N', () => {
    const logits = tf.tensor2d([
      [1, 2, 3],
      [0, 0, 0],
    ]);
    const labels = tf.tensor1d([2, 0], 'int32');
    const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
    const expected = (lse - 3 + Math.log(3)) / 2;
    const batch = { inputs: logits, labels, indices: new Int32Array([0, 1]), step: 0 };
    const ce = new CrossEntropy().loss({ logits, taps: {} }, [], batch, {});
    expect(ce.dataSync()[0]).toBeCloseTo(expected, 6);
    const grad = tf
      .grad((z: tf.Tensor) => softmaxCrossEntropy(z, labels))(logits)
      .arraySync() as number[][];
    const sm = [1, 2, 3].map((v) => Math.exp(v - lse));
    expect(grad[0][2]).toBeCloseTo((sm[2] - 1) / 2, 6);
    expect(grad[1][1]).toBeCloseTo(1 / 3 / 2, 6);
  });

  it('stays finite for huge logits', () => {
    const logits = tf.tensor2d([[1e4, -1e4, 0]]);
    const labels = tf.tensor1d([1], 'int32');
    const loss = softmaxCrossEntropy(logits, labels).dataSync()[0];
    expect(loss).toBeCloseTo(2e4, 0);
    const grad = tf
      .grad((z: tf.Tensor) => softmaxCrossEntropy(z, labels))(logits)
      .dataSync();
    expect(Array.from(grad).every(Number.isFinite)).toBe(true);
  });
});
