import type * as tf from '@tensorflow/tfjs';

/** What an objective sees of a micro-batch: the inputs (a teacher runs on them too) and the hard labels. */
export interface ObjectiveBatch {
  readonly inputs: tf.Tensor;
  /** Class indices, int32, one per sample. */
  readonly labels: tf.Tensor1D;
}

/**
 * What a training step minimises, given the student's outputs. Cross-entropy is one; distillation (a teacher's
 * soft labels, intermediate matches) is another implementation of the same interface.
 */
export interface Objective {
  readonly name: string;
  /** The mean loss over the batch. Called inside `tf.variableGrads`: it must stay differentiable. */
  loss(logits: tf.Tensor, batch: ObjectiveBatch): tf.Scalar;
}
