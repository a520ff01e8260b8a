/**
 * The training job of a job file with `pipeline:`: the model's blocks cut into P stages, world = P × D, rank =
 * stage × D + replica. Each rank trains its stage's blocks with an Engine over its stage's data-parallel group;
 * micro-batches stream through the stages by the job's schedule (src/pipeline/runtime.ts). Every stage of a
 * replica reads the same sampler, so the last stage takes its labels (and a teacher its inputs) straight from the
 * data set at the indices stage 0 fed in. Evaluation is pipelined too: test batches flow through the stages and the
 * last one counts the hits.
 */
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/backend/select.ts';
import { type Collectives, shardRange } from '../../src/comm/types.ts';
import type { BatchPlan } from '../../src/config/batch.ts';
import type { ParsedJob } from '../../src/config/schema.ts';
import { gatherBatch, type LabeledSet } from '../../src/data/dataset.ts';
import { DistributedSampler } from '../../src/data/sampler.ts';
import { Engine } from '../../src/engine/engine.ts';
import { betasScheduleFor, lrScheduleFor } from '../../src/engine/lr-schedule.ts';
import { countParams, type Net, netParams } from '../../src/engine/net.ts';
import { buildNet } from '../../src/models/build.ts';
import { microBatchSeed } from '../../src/models/dropout.ts';
import { saveNetModel } from '../../src/models/net-dir.ts';
import { CrossEntropy } from '../../src/objectives/cross-entropy.ts';
import type { Objective, ObjectiveBatch } from '../../src/objectives/objective.ts';
import {
  type PipelineLayout,
  pipelineLayout,
  rankOf,
  replicaOf,
  stageOf,
} from '../../src/pipeline/layout.ts';
import { partitionNet, type StageRange } from '../../src/pipeline/partition.ts';
import { runStageStep } from '../../src/pipeline/runtime.ts';
import { idealBubble } from '../../src/pipeline/schedule.ts';
import { activationShape, stageNet } from '../../src/pipeline/stage-net.ts';
import type { Timeline } from '../../src/trace/timeline.ts';
import type { Progress, WorkerContext } from '../worker-context.ts';
import { loadDataset } from './datasets.ts';
import { activationDtype, halfPrecisionFor } from './precision.ts';
import { type BuiltObjective, buildObjective } from './teachers.ts';
import { memoryFields, type TrainSummary } from './train.ts';

/** The train job's summary, plus what a pipeline adds. */
export interface PipelineSummary extends TrainSummary {
  // Flat fields: the launcher prints the summary as a table of scalars.
  pipeline_stages: number;
  data_parallel: number;
  micro_batches: number;
  pipeline_schedule: string;
  /**
   * Mean idle fraction of the ranks during the pipeline phase of a step (first op to the stages' closing barrier),
   * from each rank's own forward/backward time, over the steps after the first; beside it, (P−1)/(M+P−1).
   */
  bubble: number;
  bubble_ideal: number;
  /** Per stage: the most micro-batch inputs held at once (measured). */
  peak_live_activations: number[];
  /** cross_entropy or distillation. */
  objective: string;
  /** The model's own parameters (the objective's projections left out). */
  model_parameters: number;
  /** Test samples per second through the whole pipeline (every stage and replica at once). */
  inference_samples_per_s: number;
  /** Bytes of the model directory written to output_dir; 0 without one. */
  model_dir_bytes: number;
}

/** What a pipelined training run needs; the job passes the worker's, a test may pass a sub-group and its own job. */
export interface PipelineRun {
  readonly job: ParsedJob;
  readonly batch: BatchPlan;
  /** The pipeline job's world: P × D ranks. */
  readonly pg: Collectives;
  readonly train: LabeledSet;
  readonly timeline: Timeline;
  readonly signal?: AbortSignal;
  /**
   * The objective of the last stage's loss, made once the step count is known (schedulers read it); every rank
   * calls it (a teacher's logits cache is written behind a barrier). Default: cross-entropy.
   */
  objective?(totalSteps: number): Promise<Objective>;
  log?(line: string): void;
  progress?(p: Progress): void;
}

export interface PipelineTrained {
  readonly engine: Engine;
  readonly net: Net;
  readonly stage: StageInfo;
  readonly totalSteps: number;
  readonly finalLoss: number;
  /** The objective's name (cross_entropy, distillation). */
  readonly objective: string;
  readonly trainSeconds: number;
  readonly bubble: number;
  readonly peakLiveActivations: number[];
  /** Steps and step time after the first step, for steady throughput. */
  readonly steady: { steps: number; ms: number; commMs: number };
}

/** Where this rank sits in the pipeline. */
export interface StageInfo {
  readonly layout: PipelineLayout;
  readonly ranges: readonly StageRange[];
  readonly stage: number;
  readonly replica: number;
  readonly net: Net;
  /** This rank's data-parallel group (its stage's replicas). */
  readonly dp: Collectives;
}

/** Tags of the evaluation's and the weights' transfers: far above the schedule's (2 × micro-batch + 0|1). */
const EVAL_TAG = 1 << 29;
const GATHER_TAG = (1 << 29) + 1;
const EVAL_BATCH = 512;

function pipelineOf(job: ParsedJob) {
  if (!job.pipeline) throw new Error('a pipeline job needs a pipeline section');
  return job.pipeline;
}

/** The layout, the partition and this rank's stage (sub-groups are made here: every rank of `pg` calls it). */
export function placeStage(job: ParsedJob, net: Net, pg: Collectives): StageInfo {
  const p = pipelineOf(job);
  const layout = pipelineLayout(pg.size, p.stages);
  const ranges = partitionNet(net, p.stages, p.partition);
  const stage = stageOf(layout, pg.rank);
  const replica = replicaOf(layout, pg.rank);
  const { from, to } = ranges[stage];
  const dp = pg.newGroup(layout.dataParallelGroups[stage]);
  return { layout, ranges, stage, replica, net: stageNet(net, from, to), dp };
}

export async function trainPipeline(r: PipelineRun): Promise<PipelineTrained> {
  const { job, batch, pg, train, timeline } = r;
  const p = pipelineOf(job);
  if (!job.optimizer) throw new Error('a training job needs an optimizer');
  const full = buildNet(requireModel(job));
  const info = placeStage(job, full, pg);
  const { layout, stage, replica } = info;
  const last = stage === p.stages - 1;
  const { microBatch, accumulation } = batch;
  if (accumulation !== p.micro_batches)
    throw new Error(`the batch plan accumulates ${accumulation}, the pipeline has ${p.micro_batches}`);

  const sampler = new DistributedSampler({
    length: train.length,
    world: layout.replicas,
    rank: replica,
    shuffle: job.data?.shuffle,
    seed: job.seed,
    dropLast: job.data?.drop_last,
  });
  const perReplicaStep = microBatch * accumulation;
  const stepsPerEpoch = Math.floor(sampler.numSamples / perReplicaStep);
  if (stepsPerEpoch < 1)
    throw new Error(
      `train_batch_size ${batch.trainBatchSize} is larger than the ${train.length} training samples`,
    );
  const totalSteps = job.steps ?? (job.epochs ?? 1) * stepsPerEpoch;
  const lrSchedule = lrScheduleFor(job.scheduler, job.optimizer.params.lr, totalSteps);
  // Teachers run on the last stage, on the micro-batch's own inputs read from the data set: they need nothing
  // from the stages before, and their logits never travel.
  const objective = r.objective ? await r.objective(totalSteps) : new CrossEntropy();
  const engine = new Engine({
    net: info.net,
    seed: job.seed,
    // The objective's own parameters (distillation's projections) live where the loss is computed.
    objectiveParams: last ? { specs: objective.params, initial: objective.initParams(job.seed) } : undefined,
    optimizer: job.optimizer,
    lrSchedule,
    betasSchedule: betasScheduleFor(job.scheduler),
    pg: info.dp,
    batch,
    gradientClipping: job.gradient_clipping,
    commDtype: job.comm.dtype,
    zeroStage: job.zero_optimization.stage,
    normGroup: pg,
    lossRanks: layout.replicas,
    timeline,
    halfPrecision: halfPrecisionFor(job),
  });

  const { to } = info.ranges[stage];
  const inputShape = [microBatch, ...info.net.inputShape];
  const outputShape = last ? [] : [microBatch, ...activationShape(full, to)];
  const sampleShape = [...full.inputShape];
  const pipelineRanks = layout.pipelines[replica];

  const trainStart = performance.now();
  let loss = Number.NaN;
  let peak = 0;
  const idle = { busy: 0, window: 0 };
  const steady = { steps: 0, ms: 0, commMs: 0 };
  for (let epoch = 0; engine.globalStep < totalSteps; epoch++) {
    sampler.setEpoch(epoch);
    const indices = sampler.indices();
    for (let s = 0; s < stepsPerEpoch && engine.globalStep < totalSteps; s++) {
      // Yield once per step so heartbeats and aborts get through (see the train job).
      await new Promise((res) => setImmediate(res));
      r.signal?.throwIfAborted();
      const step = engine.globalStep;
      const at = (micro: number) => s * perReplicaStep + micro * microBatch;
      const result = await runStageStep({
        engine,
        schedule: p.schedule,
        stages: p.stages,
        stage,
        microBatches: p.micro_batches,
        comm: pg,
        wireDtype: activationDtype(job),
        pipelineRanks,
        inputShape,
        outputShape,
        step,
        timeline,
        // Masks from (seed, step, replica, micro): the same on every stage, and what the unsplit job draws.
        mode: (micro) => ({ training: true, seed: microBatchSeed(job.seed, step, replica, micro) }),
        input: (micro) => {
          const { inputs } = gatherBatch(train, indices, at(micro), microBatch);
          return tf.tensor(inputs, [microBatch, ...sampleShape], full.inputDtype);
        },
        lossBatch: async (micro, x) => {
          const { inputs, labels } = gatherBatch(train, indices, at(micro), microBatch);
          const ob: ObjectiveBatch = {
            inputs: tf.tensor(inputs, [microBatch, ...sampleShape], full.inputDtype),
            labels: tf.tensor1d(labels, 'int32'),
            indices: indices.slice(at(micro), at(micro) + microBatch),
            step,
          };
          const prepared = await objective.prepare(ob);
          return {
            x,
            mode: { training: true, seed: microBatchSeed(job.seed, step, replica, micro) },
            taps: objective.taps,
            loss: (out, params) => objective.loss(out, params, ob, prepared),
            dispose: () => tf.dispose([ob.inputs, ob.labels, ...Object.values(prepared)]),
          };
        },
      });
      const { stats } = result;
      loss = stats.loss;
      peak = Math.max(peak, result.peakLiveActivations);
      // The first step pays for first calls (kernels, sockets): the bubble and throughput leave it out.
      if (stats.step > 1 || totalSteps === 1) {
        idle.busy += result.busyMs;
        idle.window += result.pipelineMs;
        steady.steps++;
        steady.ms += stats.stepMs;
        steady.commMs += stats.commMs;
      }
      const seconds = (performance.now() - trainStart) / 1000;
      r.progress?.({
        step: stats.step,
        totalSteps,
        metrics: { loss, lr: stats.lr, samples_per_s: (stats.step * batch.trainBatchSize) / seconds },
      });
      if (stats.step % job.steps_per_print === 0 || stats.step === totalSteps)
        r.log?.(
          `step ${stats.step}/${totalSteps} epoch ${epoch} loss ${loss.toFixed(4)} grad_norm ${stats.gradNorm.toFixed(3)} lr ${stats.lr.toPrecision(3)}`,
        );
    }
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;

  // Every rank's idle fraction, averaged; every stage's peak, by stage.
  const sums = new Float32Array([idle.window > 0 ? 1 - idle.busy / idle.window : 0]);
  await pg.allReduce(sums, { op: 'sum', dtype: 'fp32' });
  const peaks = new Float32Array(p.stages);
  peaks[stage] = peak;
  await pg.allReduce(peaks, { op: 'max', dtype: 'fp32' });
  return {
    engine,
    net: full,
    stage: info,
    totalSteps,
    finalLoss: loss,
    objective: objective.name,
    trainSeconds,
    bubble: sums[0] / pg.size,
    peakLiveActivations: Array.from(peaks),
    steady,
  };
}

function requireModel(job: ParsedJob) {
  if (!job.model) throw new Error('a training job needs a model');
  return job.model;
}

/**
 * Top-1 accuracy over `set`, pipelined: each replica takes its shard, stage 0 feeds batches in, the last stage
 * counts the hits, one all-reduce over `pg` adds them up. Collective over `pg`.
 */
export async function pipelineAccuracy(
  t: Pick<PipelineTrained, 'engine' | 'net' | 'stage'>,
  set: LabeledSet,
  pg: Collectives,
): Promise<number> {
  const { layout, stage, replica } = t.stage;
  const last = stage === layout.stages - 1;
  const { start, end } = shardRange(set.length, layout.replicas, replica);
  const all = Int32Array.from({ length: set.length }, (_, i) => i);
  const ranks = layout.pipelines[replica];
  const mode = { training: false, seed: 0 };
  let correct = 0;
  for (let from = start; from < end; from += EVAL_BATCH) {
    const count = Math.min(EVAL_BATCH, end - from);
    const { inputs, labels } = gatherBatch(set, all, from, count);
    const x =
      stage === 0
        ? tf.tensor(inputs, [count, ...t.net.inputShape], t.net.inputDtype)
        : tf.tensor(await pg.recv(ranks[stage - 1], EVAL_TAG), [count, ...t.stage.net.inputShape]);
    const y = await t.engine.forwardMicroBatch(x, mode);
    x.dispose();
    if (last) {
      const predicted = tf.tidy(() => tf.argMax(y, -1).dataSync());
      for (let i = 0; i < count; i++) if (predicted[i] === labels[i]) correct++;
    } else await pg.send((await y.data()) as Float32Array, ranks[stage + 1], EVAL_TAG);
    y.dispose();
  }
  const counts = new Float32Array(last ? [correct, end - start] : [0, 0]);
  await pg.allReduce(counts, { op: 'sum', dtype: 'fp32' });
  return counts[0] / counts[1];
}

/**
 * Every parameter of the full net, one array per tensor in `netParams` order, on rank 0 of `pg` (undefined on the
 * others): each stage's first replica sends its blocks' values. Collective over `pg`.
 */
export async function gatherNetParams(
  t: Pick<PipelineTrained, 'engine' | 'net' | 'stage'>,
  pg: Collectives,
): Promise<Float32Array[] | undefined> {
  const { layout, replica } = t.stage;
  // Collective within the stage's group (ZeRO shards); the objective's parameters follow the net's and stay.
  const values = (await t.engine.fullParams()).subarray(0, countParams(t.stage.net));
  if (pg.rank !== 0) {
    if (replica === 0) await pg.send(values.slice(), 0, GATHER_TAG);
    return undefined;
  }
  const parts = [values];
  for (let s = 1; s < layout.stages; s++) parts.push(await pg.recv(rankOf(layout, s, 0), GATHER_TAG));
  const flat = new Float32Array(parts.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of parts) {
    flat.set(a, at);
    at += a.length;
  }
  const out: Float32Array[] = [];
  at = 0;
  for (const p of netParams(t.net)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    out.push(flat.slice(at, at + size));
    at += size;
  }
  if (at !== flat.length) throw new Error(`gathered ${flat.length} parameters for a net of ${at}`);
  return out;
}

export async function runPipelineTrainJob(ctx: WorkerContext): Promise<PipelineSummary> {
  const start = performance.now();
  const { job, pg, rank, world, batch } = ctx;
  if (!batch || !job.model || !job.data || !job.optimizer || !job.pipeline)
    throw new Error('a pipeline training job needs model, data, optimizer, pipeline and the batch sizes');
  const p = job.pipeline;
  const log0 = (line: string) => {
    if (rank === 0) ctx.log(line);
  };
  const backend = await selectBackend(job.backend);
  log0(`backend ${backend.name}: ${backend.detail}`);
  const { train, test } = loadDataset(job.data);
  log0(
    `pipeline: ${p.stages} stages × ${world / p.stages} data-parallel, ${p.schedule}, ${p.micro_batches} micro-batches of ${batch.microBatch}`,
  );
  const student = { spec: job.model, net: buildNet(job.model) };
  let built: BuiltObjective | undefined;
  const trained = await trainPipeline({
    job,
    batch,
    pg,
    train,
    timeline: ctx.timeline,
    signal: ctx.signal,
    objective: async (totalSteps) => {
      built = await buildObjective({
        ctx,
        job,
        student,
        totalSteps,
        train,
        paths: { jobDir: ctx.jobDir, cacheDir: resolve(ctx.jobDir, '.kd-launch', 'cache') },
        runKey: job.name,
      });
      for (const line of built.teachers) log0(`teacher ${line}`);
      return built.objective;
    },
    log: log0,
    progress: (x) => ctx.progress(x),
  });
  const { engine, totalSteps } = trained;

  let modelDirBytes = 0;
  if (job.output_dir) {
    const values = await gatherNetParams(trained, pg);
    if (values) {
      const out = resolve(ctx.jobDir, job.output_dir);
      // The train job's format: a tfjs layers model and a Net directory, so teachers and export read it alike.
      modelDirBytes = await saveNetModel(out, job.model, values);
      log0(`model written to ${out}`);
    }
  }
  const evalStart = performance.now();
  const accuracy = await pipelineAccuracy(trained, test, pg);
  const evalSeconds = (performance.now() - evalStart) / 1000;
  log0(`test accuracy ${(accuracy * 100).toFixed(2)}% on ${test.length} images`);
  const memory = engine.memory();
  ctx.report({ kind: 'memory', rank, zero_stage: engine.zeroStage, stage: trained.stage.stage, ...memory });
  const parameters = countParams(trained.net);
  engine.dispose();
  built?.dispose();

  const { steady } = trained;
  const summary: PipelineSummary = {
    kind: 'summary',
    backend: backend.name,
    world,
    train_batch_size: batch.trainBatchSize,
    steps: totalSteps,
    epochs: (totalSteps * batch.trainBatchSize) / train.length,
    final_loss: trained.finalLoss,
    test_accuracy: accuracy,
    samples_per_s: (totalSteps * batch.trainBatchSize) / trained.trainSeconds,
    train_s: trained.trainSeconds,
    wall_s: (performance.now() - start) / 1000,
    parameters,
    model_bytes: parameters * Float32Array.BYTES_PER_ELEMENT,
    comm_fraction: steady.ms > 0 ? steady.commMs / steady.ms : 0,
    steady_samples_per_s: steady.ms > 0 ? (steady.steps * batch.trainBatchSize) / (steady.ms / 1000) : 0,
    zero_stage: engine.zeroStage,
    // Rank 0's own state: stage 0's blocks only.
    ...memoryFields(memory),
    pipeline_stages: p.stages,
    data_parallel: world / p.stages,
    micro_batches: p.micro_batches,
    pipeline_schedule: p.schedule,
    bubble: trained.bubble,
    bubble_ideal: idealBubble(p.stages, p.micro_batches),
    peak_live_activations: trained.peakLiveActivations,
    objective: trained.objective,
    model_parameters: parameters,
    // Through the whole pipeline (every stage and replica at once), not one rank's forward.
    inference_samples_per_s: test.length / evalSeconds,
    model_dir_bytes: modelDirBytes,
  };
  if (rank === 0) ctx.report(summary);
  return summary;
}
