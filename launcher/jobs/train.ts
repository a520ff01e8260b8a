/**
 * The built-in training job: model + data + objective + engine, composed. Every rank builds the same model from
 * the job seed, trains on its DistributedSampler slice of the data, and all ranks evaluate their shard of the
 * test set together at the end. The objective is cross-entropy, or distillation from the job's teachers
 * (teachers.ts); a job with `stages:` runs one such training per stage and seed (stages.ts).
 */
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/backend/select.ts';
import type { BatchPlan } from '../../src/config/batch.ts';
import type { JobBase, ParsedJob } from '../../src/config/schema.ts';
import type { TeacherSpec } from '../../src/config/teachers.ts';
import { gatherBatch, type LabeledSet } from '../../src/data/dataset.ts';
import { DistributedSampler } from '../../src/data/sampler.ts';
import { Engine } from '../../src/engine/engine.ts';
import { betasScheduleFor, lrScheduleFor } from '../../src/engine/lr-schedule.ts';
import { estimateMemory } from '../../src/engine/memory-estimate.ts';
import { countParams } from '../../src/engine/net.ts';
import type { MemoryReport } from '../../src/engine/zero.ts';
import { buildNet } from '../../src/models/build.ts';
import { microBatchSeed } from '../../src/models/dropout.ts';
import { saveNetModel } from '../../src/models/net-dir.ts';
import type { ObjectiveBatch } from '../../src/objectives/objective.ts';
import type { WorkerContext } from '../worker-context.ts';
import { loadDataset } from './datasets.ts';
import { evaluateAccuracy, inferenceSamplesPerSecond } from './evaluate.ts';
import { halfPrecisionFor } from './precision.ts';
import { buildObjective } from './teachers.ts';
import { TrainState } from './train-state.ts';

/** What the job reports from rank 0 when it ends (the launcher prints it as the summary table). */
export interface TrainSummary {
  kind: 'summary';
  /** fp16: optimizer steps skipped because a gradient overflowed. */
  skipped_steps?: number;
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
  zero_stage: number;
  /** Parameters, gradients and optimizer state rank 0 holds, in bytes, measured (every rank reports its own). */
  state_bytes_per_rank: number;
  /** The same as `estimateMemory` predicts it before the run (what `--dry-run` prints); pipelines have none yet. */
  state_bytes_estimate?: number;
  params_bytes: number;
  grads_bytes: number;
  optimizer_bytes: number;
  /** ZeRO-3: the most gathered parameter bytes alive at once. */
  gathered_peak_bytes: number;
}

/** A training run's summary with what the comparison of stages reads. */
export interface RunSummary extends TrainSummary {
  /** cross_entropy or distillation. */
  objective: string;
  /** The model's own parameters (`parameters` less the objective's projections). */
  model_parameters: number;
  /** Batched forward passes over the test set on rank 0, test samples per second. */
  inference_samples_per_s: number;
  /** Bytes of the model directory written to output_dir; 0 without one. */
  model_dir_bytes: number;
}

/** One training run: the whole job, or one stage and seed of a staged job. */
export interface TrainRun {
  /** The job this run trains (for a stage: the stage merged over the top-level keys, with its seed). */
  readonly job: JobBase;
  readonly batch: BatchPlan;
  /** Absolute directory rank 0 writes the model to; none: the model is not saved. */
  readonly outputDir: string | undefined;
  /** Absolute checkpoint directory, when the job checkpoints (a stage's own, under the job's). */
  readonly checkpointDir: string | undefined;
  /** Where cached teacher logits go. */
  readonly cacheDir: string;
  /** Names this run's cache files. */
  readonly runKey: string;
  /** The model directory of an earlier stage (`{stage: NAME}` teachers). */
  readonly stageModelDir?: (t: Extract<TeacherSpec, { stage: string }>) => string;
  /** The data set, when the caller already loaded it (stages share it). */
  readonly data?: { train: LabeledSet; test: LabeledSet };
}

let backendLogged = false;

/** Steps left out of the steady-state figures (comm_fraction, steady_samples_per_s): first-call costs. */
export const TIMING_WARMUP_STEPS = 5;

export async function runTrainJob(ctx: WorkerContext): Promise<unknown> {
  if (ctx.job.stages !== undefined) {
    // Loaded here: stages.ts imports this module.
    const { runStages } = await import('./stages.ts');
    return runStages(ctx);
  }
  const { job } = ctx;
  if (!ctx.batch) throw new Error('a training job needs the batch sizes');
  const summary = await trainModel(ctx, {
    job,
    batch: ctx.batch,
    outputDir: job.output_dir ? resolve(ctx.jobDir, job.output_dir) : undefined,
    checkpointDir: job.checkpoint ? resolve(ctx.jobDir, job.checkpoint.dir) : undefined,
    cacheDir: resolve(ctx.jobDir, '.kd-launch', 'cache'),
    runKey: job.name.replace(/[^A-Za-z0-9_.-]/g, '_'),
  });
  if (ctx.rank === 0) ctx.report(summary);
  return summary;
}

/** Trains one model to the end: the run's job on the run's batch plan. Every rank calls it; all return. */
export async function trainModel(outer: WorkerContext, run: TrainRun): Promise<RunSummary> {
  const start = performance.now();
  const { job, batch } = run;
  // TrainState reads the job and its checkpoint section from the context: this run's, at this run's directory.
  const ctx: WorkerContext = {
    ...outer,
    job: {
      ...job,
      checkpoint:
        job.checkpoint && run.checkpointDir ? { ...job.checkpoint, dir: run.checkpointDir } : undefined,
    } as ParsedJob,
    batch,
  };
  const { pg, rank, world } = ctx;
  if (!job.model || !job.data || !job.optimizer) {
    throw new Error('a training job needs model, data, optimizer and the batch sizes');
  }
  const log0 = (line: string) => {
    if (rank === 0) ctx.log(line);
  };

  const backend = await selectBackend(job.backend);
  // Once per process: the stages of a job share it.
  if (!backendLogged) log0(`backend ${backend.name}: ${backend.detail}`);
  backendLogged = true;

  const { train, test } = run.data ?? loadDataset(job.data);
  const net = buildNet(job.model);
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
  const built = await buildObjective({
    ctx,
    job,
    student: { spec: job.model, net },
    totalSteps,
    train,
    paths: { jobDir: ctx.jobDir, stageModelDir: run.stageModelDir, cacheDir: run.cacheDir },
    runKey: run.runKey,
  });
  const { objective } = built;
  for (const line of built.teachers) log0(`teacher ${line}`);
  const ac = job.activation_checkpointing;
  const engine = new Engine({
    net,
    seed: job.seed,
    objectiveParams: { specs: objective.params, initial: objective.initParams(job.seed) },
    optimizer: job.optimizer,
    lrSchedule,
    betasSchedule: betasScheduleFor(job.scheduler),
    pg,
    batch,
    gradientClipping: job.gradient_clipping,
    commDtype: job.comm.dtype,
    zeroStage: job.zero_optimization.stage,
    activationCheckpointing: ac.enabled ? { everyNLayers: ac.every_n_layers } : undefined,
    halfPrecision: halfPrecisionFor(job),
    timeline: ctx.timeline,
  });
  const state = new TrainState({ ctx, engine, lrSchedule, stepsPerEpoch, totalSteps });
  const resumedFrom = await state.resume();
  if (resumedFrom) log0(`resumed from ${resumedFrom} at step ${engine.globalStep}`);
  const parameters = engine.groups.length;

  log0(
    `training ${parameters} parameters: ${totalSteps} steps (${stepsPerEpoch} per epoch) of ${trainBatchSize} samples, ${job.optimizer.type}${job.scheduler ? ` + ${job.scheduler.type}` : ''}, ZeRO stage ${engine.zeroStage}`,
  );

  // One sample as the model takes it: [784] for an MLP, [28, 28, 1] (NHWC) for a CNN on the same flat pixels.
  const sampleShape = [...net.inputShape];
  const trainStart = performance.now();
  let loss = Number.NaN;
  let skippedSteps = 0;
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
      const step = engine.globalStep;
      const stats = await engine.step(async (micro) => {
        const from = s * perRankStep + micro * microBatch;
        const { inputs, labels } = gatherBatch(train, indices, from, microBatch);
        const x = tf.tensor(inputs, [microBatch, ...sampleShape], net.inputDtype);
        const ob: ObjectiveBatch = {
          inputs: x,
          labels: tf.tensor1d(labels, 'int32'),
          indices: indices.slice(from, from + microBatch),
          step,
        };
        const prepared = await objective.prepare(ob);
        return {
          x,
          // Masks from (seed, step, rank, micro): a resumed run draws the ones an uninterrupted run would.
          mode: { training: true, seed: microBatchSeed(job.seed, step, rank, micro) },
          taps: objective.taps,
          loss: (out, params) => objective.loss(out, params, ob, prepared),
          dispose: () => tf.dispose([x, ob.labels, ...Object.values(prepared)]),
        };
      });
      loss = stats.loss;
      skippedSteps = stats.skippedSteps;
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
        metrics: {
          loss,
          lr: stats.lr,
          samples_per_s: samplesPerS,
          // fp16: the scale and the steps skipped on overflow, as DeepSpeed's progress line shows them.
          ...(job.fp16.enabled ? { loss_scale: stats.lossScale, skipped: stats.skippedSteps } : {}),
        },
      });
      const saved = await state.afterStep(stats.step);
      if (saved) log0(`checkpoint ${saved}`);
      const every = job.eval.every_steps;
      if (every > 0 && stats.step % every === 0 && stats.step < totalSteps) {
        const acc = await evaluateAccuracy(engine, net.inputShape, test, pg);
        log0(`step ${stats.step}/${totalSteps} test accuracy ${(acc * 100).toFixed(2)}%`);
      }
      if (stats.step % job.steps_per_print === 0 || stats.step === totalSteps) {
        log0(
          `step ${stats.step}/${totalSteps} epoch ${epoch} loss ${loss.toFixed(4)} grad_norm ${stats.gradNorm.toFixed(3)} lr ${stats.lr.toPrecision(3)} samples/s ${samplesPerS.toFixed(0)}${job.fp16.enabled ? ` loss_scale ${stats.lossScale} skipped ${stats.skippedSteps}` : ''}`,
        );
      }
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  const steadySeconds = timing.steps > 0 ? (performance.now() - timing.from) / 1000 : Number.NaN;

  let modelDirBytes = 0;
  const values = run.outputDir ? await engine.fullParams() : undefined;
  if (values && run.outputDir && rank === 0) {
    modelDirBytes = await saveNetModel(run.outputDir, job.model, netValues(engine, values));
    log0(`model written to ${run.outputDir} (${modelDirBytes} bytes)`);
  }
  const accuracy = await evaluateAccuracy(engine, net.inputShape, test, pg);
  log0(`test accuracy ${(accuracy * 100).toFixed(2)}% on ${test.length} samples`);
  const inference = await inferenceSamplesPerSecond(engine, net, test, rank === 0);
  const memory = engine.memory();
  const estimate = estimateMemory(
    { parameters: engine.groups.length, largestPair: engine.groups.largestPair },
    world,
    engine.zeroStage,
    job.optimizer,
  );
  ctx.report({ kind: 'memory', rank, zero_stage: engine.zeroStage, ...memory });
  engine.dispose();
  built.dispose();

  const summary: RunSummary = {
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
    zero_stage: engine.zeroStage,
    ...memoryFields(memory),
    state_bytes_estimate: estimate.params + estimate.grads + estimate.optimizer,
    objective: objective.name,
    model_parameters: countParams(net),
    inference_samples_per_s: inference,
    ...(job.fp16.enabled ? { skipped_steps: skippedSteps } : {}),
    model_dir_bytes: modelDirBytes,
  };
  return summary;
}

/** The net's parameters (the objective's left out) as one array per tensor, from the whole flat space. */
function netValues(engine: Engine, flat: Float32Array): Float32Array[] {
  const objective = engine.groups.groups[engine.groups.objective];
  return engine.slots
    .filter((s) => !objective.slots.includes(s))
    .map((s) => flat.slice(s.offset, s.offset + s.size));
}

/** A rank's measured memory as the summary's fields. */
export function memoryFields(m: MemoryReport) {
  return {
    state_bytes_per_rank: m.params + m.grads + m.optimizer,
    params_bytes: m.params,
    grads_bytes: m.grads,
    optimizer_bytes: m.optimizer,
    gathered_peak_bytes: m.gatheredPeak,
  };
}
