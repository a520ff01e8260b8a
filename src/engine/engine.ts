/**
 * One data-parallel training step (ZeRO stage 0), in the spirit of Accelerate / DeepSpeed's engine: gradients
 * of every micro-batch are accumulated into one flat buffer, averaged over the ranks with one all-reduce,
 * clipped, and applied by an optimizer on the flat fp32 master parameters, which are then written back into the
 * model's variables. The engine knows nothing of models, data or objectives: the caller gives it the trainable
 * variables and a function that computes a micro-batch's loss.
 */
import * as tf from '@tensorflow/tfjs';
import type { Collectives, WireDtype } from '../comm/types.ts';
import type { BatchPlan } from '../config/batch.ts';
import type { OptimizerSpec } from '../config/schema.ts';
import { clipByGlobalNorm, globalNorm } from './clip.ts';
import { createOptimizer } from './create-optimizer.ts';
import { FlatParams } from './flat-params.ts';
import type { LrSchedule } from './lr-schedule.ts';
import { fullLayout, type Optimizer } from './optimizer.ts';

export interface EngineOptions {
  /** The trainable variables, in the same order on every rank. */
  variables: readonly tf.Variable[];
  optimizer: OptimizerSpec;
  lrSchedule: LrSchedule;
  pg: Collectives;
  batch: BatchPlan;
  /** Clip the averaged gradient to this global L2 norm; 0 turns clipping off. */
  gradientClipping?: number;
  /** Wire dtype of the gradient all-reduce. */
  commDtype?: WireDtype;
}

/**
 * The loss of micro-batch `micro` (0 … accumulation-1) of the current step, as a mean over its samples. It runs
 * inside `tf.variableGrads` and a `tf.tidy`: tensors it creates are released after the step.
 */
export type MicroBatchLoss = (micro: number) => tf.Scalar;

export interface StepStats {
  /** Optimizer steps taken so far, this one included. */
  step: number;
  /** Mean loss of this rank's micro-batches (not averaged over ranks: that would cost another collective). */
  loss: number;
  lr: number;
  /** Global L2 norm of the averaged gradient, before clipping. */
  gradNorm: number;
}

export class Engine {
  readonly flat: FlatParams;
  readonly optimizer: Optimizer;
  readonly #opts: EngineOptions;
  readonly #variables: tf.Variable[];
  #step = 0;

  constructor(opts: EngineOptions) {
    if (opts.batch.dataParallel !== opts.pg.size) {
      throw new Error(
        `the batch plan is for ${opts.batch.dataParallel} data-parallel ranks, the group has ${opts.pg.size}`,
      );
    }
    this.#opts = opts;
    this.#variables = [...opts.variables];
    this.flat = new FlatParams(this.#variables);
    this.optimizer = createOptimizer(opts.optimizer, fullLayout(this.flat.slots));
  }

  /** Optimizer steps taken so far. */
  get globalStep(): number {
    return this.#step;
  }

  /** Makes every rank start from `root`'s parameters (DeepSpeed broadcasts the model at initialisation too). */
  async broadcastParams(root = 0): Promise<void> {
    this.flat.readParams();
    await this.#opts.pg.broadcast(this.flat.params, root);
    this.flat.writeParams();
  }

  async step(microLoss: MicroBatchLoss): Promise<StepStats> {
    const { pg, batch, lrSchedule, gradientClipping = 0, commDtype = 'fp32' } = this.#opts;
    const { flat } = this;
    flat.zeroGrads();
    let lossSum = 0;
    for (let micro = 0; micro < batch.accumulation; micro++) {
      tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => microLoss(micro), this.#variables);
        lossSum += value.dataSync()[0];
        flat.accumulateGrads(grads);
      });
    }

    const grads = flat.grads;
    await pg.allReduce(grads, { op: 'avg', dtype: commDtype });
    // Each micro-batch loss is a mean over its samples: the mean over the global batch divides by their count.
    if (batch.accumulation > 1) {
      const inv = 1 / batch.accumulation;
      for (let i = 0; i < grads.length; i++) grads[i] *= inv;
    }
    const gradNorm = gradientClipping > 0 ? clipByGlobalNorm(grads, gradientClipping) : globalNorm(grads);

    const lr = lrSchedule(this.#step);
    await this.optimizer.step(flat.params, grads, lr);
    flat.writeParams();
    this.#step++;
    return { step: this.#step, loss: lossSum / batch.accumulation, lr, gradNorm };
  }
}
