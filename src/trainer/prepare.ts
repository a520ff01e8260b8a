/**
 * Accelerate's `prepare()` for kd-launch: in a worker program of your own, one call turns a model, a data set, an
 * optimizer (and optionally an objective) into the engine with all its parallelism — data parallel, ZeRO 1–3,
 * fp16/bf16, activation checkpointing, pipelines — behind a handful of calls, so that the loop is yours:
 *
 *   const run = await prepare(ctx, { model: {...}, data: {...}, optimizer: {...}, train_micro_batch_size_per_gpu: 32, epochs: 2 });
 *   for (let epoch = 0; epoch < 2; epoch++)
 *     for (const batch of run.batches(epoch)) await run.step(batch);
 *   await run.evaluate();
 *   await run.save('model');
 *
 * The options are a job's keys (`model`, `data`, `optimizer`, `scheduler`, `zero_optimization`, `fp16`, …) with their
 * job-file meaning, checked the same way; it is the training job's own setup and step underneath.
 */
import { resolve } from 'node:path';
import { resolveBatch } from '../config/batch.ts';
import { resolveModelPaths, validateJob } from '../config/load.ts';
import type { ParsedJob } from '../config/schema.ts';
import type { StepStats } from '../engine/engine.ts';
import { saveNetModel } from '../models/net-dir.ts';
import type { Objective } from '../objectives/objective.ts';
import { buildJobModels } from './build-models.ts';
import type { WorkerContext } from './context.ts';
import { isOwnData, type OwnData, readOwnData, STAND_IN } from './own-data.ts';
import { runKey, type Setup, setUp, stepInput } from './train.ts';

/** `prepare()`'s options: a job's keys (as in a job file), and an objective of your own if you like. */
export type PrepareOptions = Record<string, unknown> & {
  /** A job file's data section, or data as objects of your own: a Dataset, a tf.data.Dataset (own-data.ts). */
  readonly data?: OwnData | Record<string, unknown>;
  /** What the steps minimise; default: the job's (cross-entropy, or distillation from `teachers:`). */
  readonly objective?: Objective;
};

/** One optimizer step's worth of this rank's samples (a replica's slice of the global batch). */
export interface StepBatch {
  readonly epoch: number;
  /** Sample indices into the training set, micro-batch after micro-batch. */
  readonly indices: Int32Array;
}

export interface PreparedRun {
  /** Steps per epoch: whole global batches only, as every rank must take the same number. */
  readonly stepsPerEpoch: number;
  /** The steps the options' `steps` or `epochs` make (what the LR schedule spans). */
  readonly totalSteps: number;
  /** Optimizer steps taken so far. */
  readonly globalStep: number;
  /** This rank's step batches of `epoch` (the sampler reshuffles per epoch, the same on every rank). */
  batches(epoch: number): Iterable<StepBatch>;
  /** One optimizer step on `batch`: forward, backward, gradient reduction, clipping, update. Collective. */
  step(batch: StepBatch): Promise<StepStats>;
  /** Top-1 accuracy over the test split (collective). */
  evaluate(): Promise<number>;
  /** Writes the model (rank 0; collective) as `output_dir` would; returns the directory's bytes (0 elsewhere). */
  save(dir: string): Promise<number>;
  dispose(): void;
}

/** The engine, data and objective of `options`, ready for a loop of your own. Every rank calls it. */
export async function prepare(ctx: WorkerContext, options: PrepareOptions): Promise<PreparedRun> {
  const { objective, data, ...keys } = options;
  const own = isOwnData(data);
  const parsed = await buildJobModels(
    ctx,
    resolveModelPaths(
      validateJob({ name: 'prepare', ...keys, data: own ? STAND_IN : data }, 'prepare()'),
      ctx.jobDir,
    ),
    'prepare()',
  );
  const job: ParsedJob = own ? { ...parsed, data: undefined } : parsed;
  const batch = resolveBatch(job, ctx.world);
  const s: Setup = await setUp(ctx, {
    job,
    batch,
    outputDir: undefined,
    checkpointDir: undefined,
    cacheDir: resolve(ctx.jobDir, '.kd-launch', 'cache'),
    runKey: runKey(job.name),
    data: own ? await readOwnData(ctx, data, job.model) : undefined,
    objective,
  });
  const perStep = batch.microBatch * batch.accumulation;
  return {
    stepsPerEpoch: s.stepsPerEpoch,
    totalSteps: s.totalSteps,
    get globalStep() {
      return s.engine.globalStep;
    },
    *batches(epoch) {
      s.sampler.setEpoch(epoch);
      const indices = s.sampler.indices();
      for (let at = 0; at < s.stepsPerEpoch; at++) {
        yield { epoch, indices: indices.subarray(at * perStep, (at + 1) * perStep) };
      }
    },
    step: (b) => s.placement.step(s.engine, stepInput(s, b.indices), false),
    evaluate: () => s.placement.evaluate(s.engine, s.test),
    async save(dir) {
      const values = await s.placement.modelValues(s.engine);
      if (!values || !job.model) return 0;
      return saveNetModel(resolve(ctx.jobDir, dir), job.model, values);
    },
    dispose() {
      s.engine.dispose();
      s.built.dispose();
    },
  };
}
