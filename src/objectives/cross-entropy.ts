import * as tf from '@tensorflow/tfjs';
import type { Objective, ObjectiveBatch } from './objective.ts';

/**
 * Softmax cross-entropy from logits, mean over the batch: −mean(log_softmax(z)[y]). `tf.logSoftmax` subtracts
 * the row maximum first, so large logits neither overflow nor lose the gradient.
 */
export function softmaxCrossEntropy(logits: tf.Tensor, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const classes = logits.shape[logits.shape.length - 1];
    const logProbs = tf.logSoftmax(logits);
    const picked = tf.sum(tf.mul(logProbs, tf.oneHot(labels, classes)), -1);
    return tf.neg(tf.mean(picked)) as tf.Scalar;
  });
}

export class CrossEntropy implements Objective {
  readonly name = 'cross_entropy';

  loss(logits: tf.Tensor, batch: ObjectiveBatch): tf.Scalar {
    return softmaxCrossEntropy(logits, batch.labels);
  }
}
