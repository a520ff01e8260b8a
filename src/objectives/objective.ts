import type * as tf from '@tensorflow/tfjs';
import type { NetOutput, ParamSpec } from '../engine/net.ts';

/** What an objective sees of a micro-batch. */
export interface ObjectiveBatch {
  /** The student's inputs (a live teacher runs on them too). */
  readonly inputs: tf.Tensor;
  /** Class indices, int32, one per sample. */
  readonly labels: tf.Tensor1D;
  /** Each sample's index in the training set (cached teacher outputs are looked up by it). */
  readonly indices: Int32Array;
  /** The optimizer step this micro-batch belongs to (schedulers of temperature and weights read it). */
  readonly step: number;
  /** The task of every sample of the batch, for multi-task distillation; absent for single-task data. */
  readonly task?: number;
}

/**
 * What a training step minimises, given the student's outputs. Cross-entropy is one; distillation (a teacher's
 * soft labels, intermediate matches with trained projections) is another implementation of the same interface.
 * The engine sees only this: it knows nothing of teachers.
 */
export interface Objective {
  readonly name: string;
  /**
   * Trainable parameters of the objective itself (distillation's projections). The engine trains them with the
   * student (they join the flat parameter space after the net's) and checkpoints them; none for cross-entropy.
   */
  readonly params: readonly ParamSpec[];
  /** Initial values of `params`, in order, from `seed` alone (the same on every rank). */
  initParams(seed: number): Float32Array[];
  /**
   * Work done before the micro-batch's forward and outside the gradient tape: a live teacher's inference, or
   * reading cached teacher outputs. What it returns is handed to `loss` and disposed after the micro-batch.
   */
  prepare(batch: ObjectiveBatch): Promise<Prepared>;
  /**
   * The mean loss over the batch. Runs inside the gradient tape: it must stay differentiable in `student` and
   * `params` (this objective's parameters as tensors, in `this.params` order).
   */
  loss(
    student: NetOutput,
    params: readonly tf.Tensor[],
    batch: ObjectiveBatch,
    prepared: Prepared,
  ): tf.Scalar;
  /** The student taps `loss` reads (`<block>/<tap>`), so that block-wise execution keeps exactly those. */
  readonly taps: readonly string[];
}

/** An objective's per-micro-batch precomputation: tensors (disposed by the caller) by name. */
export type Prepared = Readonly<Record<string, tf.Tensor>>;
