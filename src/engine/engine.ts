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
import { FlatParams, type FlatRange } from './flat-params.ts';
import type { BetasSchedule, LrSchedule } from './lr-schedule.ts';
import { fullLayout, type Optimizer, type OptimizerState } from './optimizer.ts';

export interface EngineOptions {
  /** The trainable variables, in the same order on every rank. */
  variables: readonly tf.Variable[];
  optimizer: OptimizerSpec;
  lrSchedule: LrSchedule;
  /** Betas set by the schedule (OneCycle's momentum cycling); the optimizer's own when absent. */
  betasSchedule?: BetasSchedule;
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
  /** Wall time of the whole step on this rank, in ms: micro-batches, all-reduce, clipping and the update. */
  stepMs: number;
  /** Of which the gradient all-reduce (waiting for the slowest rank included), in ms. */
  commMs: number;
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

  /** The flat elements whose parameters and optimizer state this rank owns (stage 0: all of them). */
  get ownedRange(): FlatRange {
    return { start: 0, end: this.flat.length };
  }

  /**
   * What a checkpoint of this rank holds: the step count, the owned parameters and the optimizer's state. The
   * arrays are live views: write them out before the next step. The LR schedule needs nothing more (it is a
   * function of the step).
   */
  snapshot(): {
    step: number;
    range: FlatRange;
    params: Float32Array;
    optimizer: { type: string; state: OptimizerState };
  } {
    const range = this.ownedRange;
    return {
      step: this.#step,
      range,
      params: this.flat.params.subarray(range.start, range.end),
      optimizer: { type: this.optimizer.type, state: this.optimizer.state() },
    };
  }

  /** Continues from a snapshot (of the same layout and optimizer): parameters, moments and step count. */
  restore(s: {
    step: number;
    range: FlatRange;
    params: Float32Array;
    optimizer: { type: string; state: OptimizerState };
  }): void {
    const own = this.ownedRange;
    if (s.range.start !== own.start || s.range.end !== own.end) {
      throw new Error(
        `the checkpoint holds flat elements [${s.range.start}, ${s.range.end}); this rank owns [${own.start}, ${own.end})`,
      );
    }
    if (s.optimizer.type !== this.optimizer.type) {
      throw new Error(
        `the checkpoint's optimizer is ${s.optimizer.type}; the job's is ${this.optimizer.type}`,
      );
    }
    this.optimizer.loadState(s.optimizer.state);
    this.flat.params.set(s.params, own.start);
    this.flat.writeParams();
    this.#step = s.step;
  }

  /** Makes every rank start from `root`'s parameters (DeepSpeed broadcasts the model at initialisation too). */
  async broadcastParams(root = 0): Promise<void> {
    this.flat.readParams();
    await this.#opts.pg.broadcast(this.flat.params, root);
    this.flat.writeParams();
  }

  async step(microLoss: MicroBatchLoss): Promise<StepStats> {
    const { pg, batch, lrSchedule, betasSchedule, gradientClipping = 0, commDtype = 'fp32' } = this.#opts;
    const { flat } = this;
    const t0 = performance.now();
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
    const c0 = performance.now();
    await pg.allReduce(grads, { op: 'avg', dtype: commDtype });
    const commMs = performance.now() - c0;
    // Each micro-batch loss is a mean over its samples: the mean over the global batch divides by their count.
    if (batch.accumulation > 1) {
      const inv = 1 / batch.accumulation;
      for (let i = 0; i < grads.length; i++) grads[i] *= inv;
    }
    const gradNorm = gradientClipping > 0 ? clipByGlobalNorm(grads, gradientClipping) : globalNorm(grads);

    const lr = lrSchedule(this.#step);
    await this.optimizer.step(flat.params, grads, lr, betasSchedule?.(this.#step));
    flat.writeParams();
    this.#step++;
    const stepMs = performance.now() - t0;
    return { step: this.#step, loss: lossSum / batch.accumulation, lr, gradNorm, stepMs, commMs };
  }
}
