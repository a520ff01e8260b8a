/** A tiny MLP, its data and an engine over it, shared by the engine tests. */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../../src/base/rng.ts';
import type { Collectives } from '../../src/comm/types.ts';
import type { BatchPlan } from '../../src/config/batch.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import { Engine, type EngineOptions, type MicroBatch } from '../../src/engine/engine.ts';
import { constantLr } from '../../src/engine/lr-schedule.ts';
import { microBatchSeed } from '../../src/models/dropout.ts';
import { mlpNet } from '../../src/models/mlp.ts';
import { softmaxCrossEntropy } from '../../src/objectives/cross-entropy.ts';

export const IN = 8;
export const CLASSES = 3;
/** Samples in the data set: enough for 2 steps of 24. */
export const SAMPLES = 48;
export const SGD: OptimizerSpec = {
  type: 'SGD',
  params: { lr: 0.1, momentum: 0, nesterov: false, weight_decay: 0 },
};

const rng = new Rng(99);
const X = Float32Array.from({ length: SAMPLES * IN }, () => rng.next() * 2 - 1);
const Y = Int32Array.from({ length: SAMPLES }, () => rng.nextInt(CLASSES));

export function plan(microBatch: number, accumulation: number, dataParallel = 1): BatchPlan {
  return { microBatch, accumulation, dataParallel, trainBatchSize: microBatch * accumulation * dataParallel };
}

export function tinyEngine(
  pg: Collectives,
  batch: BatchPlan,
  extra: Partial<EngineOptions> & { dropout?: number; layers?: number[] } = {},
): Engine {
  const { dropout = 0, layers = [IN, 7, 5, CLASSES], ...opts } = extra;
  const net = mlpNet({ type: 'mlp', layers, activation: 'tanh', dropout });
  return new Engine({ net, seed: 5, optimizer: SGD, lrSchedule: constantLr(0.1), pg, batch, ...opts });
}

/**
 * Micro-batches of one step on one rank: the global batch of step `step` is samples [step·B, (step+1)·B) (mod the
 * data set), and rank r of `world` takes the r-th contiguous part of it, cut into micro-batches.
 */
export function microBatches(
  batch: BatchPlan,
  rank: number,
  world: number,
  step = 0,
  opts: { lossFactor?: number } = {},
) {
  const factor = opts.lossFactor ?? 1;
  return async (micro: number): Promise<MicroBatch> => {
    const perRank = batch.microBatch * batch.accumulation;
    const from = (step * perRank * world + rank * perRank + micro * batch.microBatch) % SAMPLES;
    const n = batch.microBatch;
    const x = tf.tensor2d(X.slice(from * IN, (from + n) * IN), [n, IN]);
    const y = tf.tensor1d(Y.slice(from, from + n), 'int32');
    return {
      x,
      mode: { training: true, seed: microBatchSeed(1, step, 0, micro) },
      taps: [],
      // `lossFactor` makes gradients tiny (underflow) or non-finite (an injected overflow).
      loss: (out) =>
        factor === 1
          ? softmaxCrossEntropy(out.logits, y)
          : tf.mul(softmaxCrossEntropy(out.logits, y), factor),
      dispose: () => tf.dispose([x, y]),
    };
  };
}
