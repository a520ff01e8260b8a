/**
 * The built-in training job: model + data + objective + engine, composed. Every rank builds the same model from
 * the job seed (and takes rank 0's parameters once more by broadcast), trains on its DistributedSampler slice of
 * the data, and all ranks evaluate their shard of the test set together at the end.
 */
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/backend/select.ts';
import { type Collectives, shardRange } from '../../src/comm/types.ts';
import type { DataSpec } from '../../src/config/schema.ts';
import { gatherBatch, type LabeledSet } from '../../src/data/dataset.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { DistributedSampler } from '../../src/data/sampler.ts';
import { Engine } from '../../src/engine/engine.ts';
import { betasScheduleFor, lrScheduleFor } from '../../src/engine/lr-schedule.ts';
import { buildModel, trainableVariables } from '../../src/models/build.ts';
import { seedDropout } from '../../src/models/dropout.ts';
import { saveModel } from '../../src/models/save.ts';
import { CrossEntropy } from '../../src/objectives/cross-entropy.ts';
import type { WorkerContext } from '../worker-context.ts';
import { TrainState } from './train-state.ts';

/** What the job reports from rank 0 when it ends (the launcher prints it as the summary table). */
export interface TrainSummary {
  kind: 'summary';
  backend: string;
  world: number;
  train_batch_size: number;
  steps: number;
  epochs: number;
  final_loss: number;
  test_accuracy: number;
  /** Training samples per second over all ranks, over the steps this run trained (not a checkpoint's). */
  samples_per_s: number;
  train_s: number;
  /** Whole job on this worker: backend, data, model, training and evaluation. */
  wall_s: number;
  parameters: number;
  /** The parameters as fp32. */
  model_bytes: number;
  /**
   * Time in the gradient all-reduce over step time, measured by the engine on this rank, over the steps after
   * the first TIMING_WARMUP_STEPS (all steps when there are no more).
   */
  comm_fraction: number;
  /** Training samples per second over all ranks, over the same steps as comm_fraction (no warm-up). */
  steady_samples_per_s: number;
}

/** Steps left out of the steady-state figures (comm_fraction, steady_samples_per_s): first-call costs. */
export const TIMING_WARMUP_STEPS = 5;

/** Test images per forward pass during evaluation. */
const EVAL_BATCH = 512;

export async function runTrainJob(ctx: WorkerContext): Promise<TrainSummary> {
  const start = performance.now();
  const { job, pg, rank, world } = ctx;
  const { batch } = ctx;
  if (!batch || !job.model || !job.data || !job.optimizer) {
    throw new Error('a training job needs model, data, optimizer and the batch sizes');
  }
  const log0 = (line: string) => {
    if (rank === 0) ctx.log(line);
  };

  const backend = await selectBackend(job.backend);
  log0(`backend ${backend.name}: ${backend.detail}`);

  const { train, test } = loadDataset(job.data);
  const model = buildModel(job.model, job.seed);
  checkShapes(model, train);
  const sampler = new DistributedSampler({
    length: train.length,
    world,
    rank,
    shuffle: job.data.shuffle,
    seed: job.seed,
    dropLast: job.data.drop_last,
  });
  const { microBatch, accumulation, trainBatchSize } = batch;
  const perRankStep = microBatch * accumulation;
  // Whole batches only: every rank must run the same number of micro-batches per step.
  const stepsPerEpoch = Math.floor(sampler.numSamples / perRankStep);
  if (stepsPerEpoch < 1) {
    throw new Error(`train_batch_size ${trainBatchSize} is larger than the ${train.length} training samples`);
  }
  const totalSteps = job.steps ?? (job.epochs ?? 1) * stepsPerEpoch;
  const lrSchedule = lrScheduleFor(job.scheduler, job.optimizer.params.lr, totalSteps);
  const engine = new Engine({
    variables: trainableVariables(model),
    optimizer: job.optimizer,
    lrSchedule,
    betasSchedule: betasScheduleFor(job.scheduler),
    pg,
    batch,
    gradientClipping: job.gradient_clipping,
    commDtype: job.comm.dtype,
  });
  await engine.broadcastParams(0);
  const state = new TrainState({ ctx, engine, lrSchedule, stepsPerEpoch, totalSteps });
  const resumedFrom = state.resume();
  if (resumedFrom) log0(`resumed from ${resumedFrom} at step ${engine.globalStep}`);
  const parameters = engine.flat.length;

  log0(
    `training ${parameters} parameters: ${totalSteps} steps (${stepsPerEpoch} per epoch) of ${trainBatchSize} samples, ${job.optimizer.type}${job.scheduler ? ` + ${job.scheduler.type}` : ''}`,
  );

  const objective = new CrossEntropy();
  // One sample as the model takes it: [784] for an MLP, [28, 28, 1] (NHWC) for a CNN on the same flat pixels.
  const sampleShape = model.inputs[0].shape.slice(1) as number[];
  const trainStart = performance.now();
  let loss = Number.NaN;
  // Steady-state figures: the steps of this run after its first TIMING_WARMUP_STEPS (a resumed run warms up too).
  const timing = { firstStep: engine.globalStep, from: Number.NaN, steps: 0, stepMs: 0, commMs: 0 };
  // A resumed run starts where the checkpoint's step puts it: the same epoch's permutation, the same position.
  for (let epoch = Math.floor(engine.globalStep / stepsPerEpoch); engine.globalStep < totalSteps; epoch++) {
    sampler.setEpoch(epoch);
    const indices = sampler.indices();
    for (
      let s = engine.globalStep % stepsPerEpoch;
      s < stepsPerEpoch && engine.globalStep < totalSteps;
      s++
    ) {
      // Let the event loop run once per step: with nothing to wait for (world 1: the all-reduce is a no-op) the
      // loop would otherwise never yield, and heartbeats, logs, reports and aborts would wait for its end; the
      // master's gRPC keepalive drops a worker silent for more than a few seconds.
      await new Promise((r) => setImmediate(r));
      ctx.signal.throwIfAborted();
      const stats = await engine.step((micro) => {
        const { inputs, labels } = gatherBatch(
          train,
          indices,
          s * perRankStep + micro * microBatch,
          microBatch,
        );
        const x = tf.tensor(inputs, [microBatch, ...sampleShape]);
        // Dropout masks from (seed, step, rank, micro): a resumed run draws the ones an uninterrupted run would.
        seedDropout(model, job.seed, engine.globalStep, rank, micro);
        const logits = model.apply(x, { training: true }) as tf.Tensor;
        return objective.loss(logits, { inputs: x, labels: tf.tensor1d(labels, 'int32') });
      });
      loss = stats.loss;
      const warm = TIMING_WARMUP_STEPS < totalSteps - timing.firstStep ? TIMING_WARMUP_STEPS : 0;
      if (stats.step - timing.firstStep > warm) {
        if (timing.steps === 0) timing.from = performance.now() - stats.stepMs;
        timing.steps++;
        timing.stepMs += stats.stepMs;
        timing.commMs += stats.commMs;
      }
      const seconds = (performance.now() - trainStart) / 1000;
      // Steps of this run only: a resumed run did not train the checkpoint's steps in `seconds`.
      const samplesPerS = ((stats.step - timing.firstStep) * trainBatchSize) / seconds;
      ctx.progress({
        step: stats.step,
        totalSteps,
        metrics: { loss, lr: stats.lr, samples_per_s: samplesPerS },
      });
      const saved = await state.afterStep(stats.step);
      if (saved) log0(`checkpoint ${saved}`);
      const every = job.eval.every_steps;
      if (every > 0 && stats.step % every === 0 && stats.step < totalSteps) {
        const acc = await evaluateAccuracy(model, test, pg);
        log0(`step ${stats.step}/${totalSteps} test accuracy ${(acc * 100).toFixed(2)}%`);
      }
      if (stats.step % job.steps_per_print === 0 || stats.step === totalSteps) {
        log0(
          `step ${stats.step}/${totalSteps} epoch ${epoch} loss ${loss.toFixed(4)} grad_norm ${stats.gradNorm.toFixed(3)} lr ${stats.lr.toPrecision(3)} samples/s ${samplesPerS.toFixed(0)}`,
        );
      }
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  const steadySeconds = timing.steps > 0 ? (performance.now() - timing.from) / 1000 : Number.NaN;

  if (job.output_dir && rank === 0) {
    const out = resolve(ctx.jobDir, job.output_dir);
    await saveModel(model, out);
    log0(`model written to ${out}`);
  }
  const accuracy = await evaluateAccuracy(model, test, pg);
  log0(`test accuracy ${(accuracy * 100).toFixed(2)}% on ${test.length} images`);
  model.dispose();

  const summary: TrainSummary = {
    kind: 'summary',
    backend: backend.name,
    world,
    train_batch_size: trainBatchSize,
    steps: totalSteps,
    epochs: (totalSteps * trainBatchSize) / train.length,
    final_loss: loss,
    test_accuracy: accuracy,
    samples_per_s: ((totalSteps - timing.firstStep) * trainBatchSize) / trainSeconds,
    train_s: trainSeconds,
    wall_s: (performance.now() - start) / 1000,
    parameters,
    model_bytes: parameters * Float32Array.BYTES_PER_ELEMENT,
    comm_fraction: timing.stepMs > 0 ? timing.commMs / timing.stepMs : 0,
    steady_samples_per_s: timing.steps > 0 ? (timing.steps * trainBatchSize) / steadySeconds : 0,
  };
  if (rank === 0) ctx.report(summary);
  return summary;
}

function loadDataset(spec: DataSpec): { train: LabeledSet; test: LabeledSet } {
  switch (spec.dataset) {
    case 'mnist':
      return loadMnist();
  }
}

function checkShapes(model: tf.LayersModel, data: LabeledSet): void {
  const inShape = model.inputs[0].shape;
  const outShape = model.outputs[0].shape;
  // The flat features fill the input shape: an MLP's [784] or a CNN's [28, 28, 1].
  const inputs = inShape.slice(1).reduce((a: number, b) => a * (b ?? Number.NaN), 1);
  const outputs = outShape[outShape.length - 1];
  if (inputs !== data.featureSize || outputs !== data.numClasses) {
    throw new Error(
      `model maps ${inputs} inputs to ${outputs} outputs; the data has ${data.featureSize} features and ${data.numClasses} classes`,
    );
  }
}

/** Top-1 accuracy over `set`: each rank classifies its contiguous shard, one all-reduce adds up the counts. */
async function evaluateAccuracy(model: tf.LayersModel, set: LabeledSet, pg: Collectives): Promise<number> {
  const { start, end } = shardRange(set.length, pg.size, pg.rank);
  const all = Int32Array.from({ length: set.length }, (_, i) => i);
  let correct = 0;
  for (let from = start; from < end; from += EVAL_BATCH) {
    const count = Math.min(EVAL_BATCH, end - from);
    const { inputs, labels } = gatherBatch(set, all, from, count);
    const predicted = tf.tidy(() => {
      const shape = model.inputs[0].shape.slice(1) as number[];
      const logits = model.predict(tf.tensor(inputs, [count, ...shape])) as tf.Tensor;
      return tf.argMax(logits, -1).dataSync();
    });
    for (let i = 0; i < count; i++) if (predicted[i] === labels[i]) correct++;
  }
  const counts = new Float32Array([correct, end - start]);
  await pg.allReduce(counts, { op: 'sum', dtype: 'fp32' });
  return counts[0] / counts[1];
}
