import { tf } from '../backend/tf.ts';
import type { NetOutput } from '../engine/net.ts';
import type { Objective, ObjectiveBatch, Prepared } from './objective.ts';

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

/** Training on hard labels alone (TextBrewer's BasicTrainer): no teacher, no parameters of its own. */
export class CrossEntropy implements Objective {
  readonly name = 'cross_entropy';
  readonly params = [];
  readonly taps = [];

  initParams(_seed: number): Float32Array[] {
    return [];
  }

  async prepare(_batch: ObjectiveBatch): Promise<Prepared> {
    return {};
  }

  loss(
    student: NetOutput,
    _params: readonly tf.Tensor[],
    batch: ObjectiveBatch,
    _prepared: Prepared,
  ): tf.Scalar {
    return softmaxCrossEntropy(student.logits, batch.labels);
  }
}
