/**
 * The training loop, the one every training job runs: model + data + objective + engine, composed, for data
 * parallel and pipelined runs alike (a placement says how this rank takes part: placement.ts). Every rank builds
 * the same model from the job seed, trains on its replica's DistributedSampler slice of the data, checkpoints and
 * evaluates when due, and all ranks evaluate the test set together at the end. The objective is cross-entropy, or
 * distillation from the job's teachers (build-objective.ts); a job with `stages:` runs one such training per job
 * stage and seed (job-stages.ts).
 */
import { resolve } from 'node:path';
import { residentCopies } from '../backend/names.ts';
import { selectBackend } from '../backend/select.ts';
import { tf } from '../backend/tf.ts';
import type { BatchPlan } from '../config/batch.ts';
import type { StartFrom } from '../config/job-stages.ts';
import { checkpointDirOf, modelDirOf } from '../config/outputs.ts';
import type { JobBase, ModelSpec } from '../config/schema.ts';
import type { TeacherSpec } from '../config/teachers.ts';
import { gatherBatch, type LabeledSet } from '../data/labeled-set.ts';
import { type LoadedData, loadDataset } from '../data/load.ts';
import { DistributedSampler } from '../data/sampler.ts';
import { Engine, type MicroBatch } from '../engine/engine.ts';
import { betasScheduleFor, type LrSchedule, lrScheduleFor } from '../engine/lr-schedule.ts';
import { estimateMemory } from '../engine/memory-estimate.ts';
import { countParams, type Net } from '../engine/net.ts';
import { ParamGroups } from '../engine/param-groups.ts';
import { sparsityScheduleOf } from '../engine/pruning.ts';
import { buildNet } from '../models/build.ts';
import { microBatchSeed } from '../models/dropout.ts';
import { toLowRank } from '../models/mlp.ts';
import { saveNetModel, startingFrom, withValues } from '../models/net-dir.ts';
import { withoutPrunedHeads, withoutPrunedUnits } from '../models/pruned-units.ts';
import type { Objective, ObjectiveBatch } from '../objectives/objective.ts';
import { buildJobModels } from './build-models.ts';
import { type BuiltObjective, buildObjective } from './build-objective.ts';
import { Checkpoints } from './checkpoints.ts';
import type { WorkerContext } from './context.ts';
import { dataParallel } from './data-parallel.ts';
import { halfPrecisionFor } from './mixed-precision.ts';
import { type OnnxFigures, writeJobOnnx } from './onnx.ts';
import { pipelined } from './pipelined.ts';
import type { Placement, StepInput } from './placement.ts';
import { calibrate, type Quantized, quantizationLine, quantized as quantizedNet } from './quantize.ts';
import { RecordPacer } from './record-pacer.ts';
import type { EvalRecord, RunLabel, StepRecord } from './records.ts';
import { memoryFields, type RunSummary, SteadyTiming } from './summary.ts';

/** One training run: the whole job, or one job stage and seed of a multi-stage job. */
export interface TrainRun {
  /** The job this run trains (for a job stage: the stage merged over the top-level keys, with its seed). */
  readonly job: JobBase;
  readonly batch: BatchPlan;
  /** Absolute directory rank 0 writes the model to; none: the model is not saved. */
  readonly outputDir: string | undefined;
  /** Absolute checkpoint directory, when the job checkpoints (a job stage's own, under the job's). */
  readonly checkpointDir: string | undefined;
  /** Where cached teacher logits go. */
  readonly cacheDir: string;
  /** Names this run's cache files (letters, digits, `_ . -`). */
  readonly runKey: string;
  /**
   * A model directory whose trained values the model starts from (a `{stage: NAME}` model), or only its `layers`;
   * else `init(seed)`.
   */
  readonly startFrom?: StartFrom<string>;
  /** The model directory of an earlier job stage (`{stage: NAME}` teachers). */
  readonly stageModelDir?: (t: Extract<TeacherSpec, { stage: string }>) => string;
  /** The data, when the caller already loaded it (job stages share it; prepare() reads the user's own objects). */
  readonly data?: LoadedData;
  /** The objective, when the caller brings its own (`prepare()`); else the job's (cross-entropy, distillation). */
  readonly objective?: Objective;
  /** Which run of a multi-stage job this is, for its records. */
  readonly label?: RunLabel;
}

let backendLogged = false;

/** The worker's training program: the job, or its job stages one after the other. */
export async function runTraining(worker: WorkerContext): Promise<unknown> {
  // Its Nets built in code are built in every worker (the launcher saved its layers models as directories).
  const ctx = { ...worker, job: await buildJobModels(worker, worker.job, '<job>') };
  if (ctx.job.stages !== undefined) {
    // Loaded here: job-stages.ts imports this module.
    const { runJobStages } = await import('./job-stages.ts');
    return runJobStages(ctx);
  }
  const { job } = ctx;
  if (!ctx.batch) throw new Error('a training job needs the batch sizes');
  const summary = await trainModel(ctx, {
    job,
    batch: ctx.batch,
    outputDir: modelDirOf(job, ctx.jobDir, ctx.runDir),
    checkpointDir: checkpointDirOf(job, ctx.jobDir, ctx.runDir),
    cacheDir: resolve(ctx.jobDir, '.kd-launch', 'cache'),
    runKey: runKey(job.name),
  });
  if (ctx.rank === 0) ctx.report(summary);
  return summary;
}

/** A name made safe for a file name. */
export function runKey(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, '_');
}

/** Everything a run sets up before its first step. */
export interface Setup {
  readonly ctx: WorkerContext;
  readonly run: TrainRun;
  /** The model trained: the job's, or the one its start directory holds. */
  readonly spec: ModelSpec;
  readonly backend: string;
  readonly train: LabeledSet;
  readonly test: LabeledSet;
  readonly placement: Placement;
  readonly sampler: DistributedSampler;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly built: BuiltObjective;
  readonly engine: Engine;
  readonly checkpoints: Checkpoints;
  /** A quantized run's fake-quantized net and quantizers (the job's `quantization:`). */
  readonly quantized: Quantized | undefined;
  readonly log0: (line: string) => void;
}

/**
 * Trains one model to the end: the run's job on the run's batch plan over `ctx.pg` (the world, or a sub-group a
 * script made). Every rank of `ctx.pg` calls it; all return the same summary.
 */
export async function trainModel(ctx: WorkerContext, run: TrainRun): Promise<RunSummary> {
  const start = performance.now();
  const setup = await setUp(ctx, run);
  try {
    const { quantization } = run.job;
    if (setup.quantized && quantization) {
      await calibrate(setup, setup.quantized, quantization);
      setup.log0(quantizationLine(setup.quantized, quantization));
    }
    const resumedFrom = await setup.checkpoints.resume();
    if (resumedFrom) setup.log0(`resumed from ${resumedFrom} at step ${setup.engine.globalStep}`);
    const { job, batch } = run;
    setup.log0(
      `training ${setup.engine.groups.length} parameters: ${setup.totalSteps} steps (${setup.stepsPerEpoch} per epoch) of ${batch.trainBatchSize} samples, ${job.optimizer?.type}${job.scheduler ? ` + ${job.scheduler.type}` : ''}, ZeRO stage ${setup.engine.zeroStage}`,
    );
    const trained = await trainSteps(setup);
    return await finish(setup, trained, start);
  } finally {
    setup.engine.dispose();
    setup.built.dispose();
  }
}

/** Builds what a run needs before its first step, on every rank of `ctx.pg` (collective: sub-groups, caches). */
export async function setUp(ctx: WorkerContext, run: TrainRun): Promise<Setup> {
  const { job, batch } = run;
  const { model, optimizer } = job;
  const data = run.data ?? (job.data && loadDataset(job.data, ctx.jobDir));
  if (!model || !data || !optimizer) throw new Error('a training job needs model, data and optimizer');
  const log0 = (line: string) => {
    if (ctx.rank === 0) ctx.log(line);
  };
  const backend = await selectBackend(job.backend);
  // Once per process: the job stages of a job share it.
  if (!backendLogged) log0(`backend ${backend.name}: ${backend.detail}`);
  backendLogged = true;

  const { train, test } = data;
  const half = halfPrecisionFor(job);
  const start = run.startFrom && startingFrom(run.startFrom.model, run.startFrom.layers);
  const { spec, net } = job.low_rank
    ? lowRankStart(start?.spec ?? model, start?.net ?? buildNet(model), job.low_rank, job.seed)
    : { spec: start?.spec ?? model, net: start?.net ?? buildNet(model) };
  const quantized = job.quantization && quantizedNet(net, job.quantization);
  const placement = place(ctx, job, quantized?.net ?? net, batch, half?.dtype);
  if (placement.layout) log0(placement.layout);
  const sampler = new DistributedSampler({
    length: train.length,
    world: placement.replicas,
    rank: placement.replica,
    shuffle: data.shuffle,
    seed: job.seed,
    dropLast: data.drop_last,
  });
  // Whole batches only: every replica must run the same number of micro-batches per step.
  const stepsPerEpoch = sampler.steps(batch.microBatch * batch.accumulation);
  if (stepsPerEpoch < 1) {
    throw new Error(
      `train_batch_size ${batch.trainBatchSize} is larger than the ${train.length} training samples`,
    );
  }
  // Post-training quantization trains nothing.
  const totalSteps = job.quantization?.mode === 'ptq' ? 0 : (job.steps ?? (job.epochs ?? 1) * stepsPerEpoch);
  const lrSchedule = lrScheduleFor(job.scheduler, optimizer.params.lr, totalSteps);
  // Every rank builds it (a teacher's logits cache is written behind a barrier); the loss is computed where the
  // placement says, and the objective's trainable parameters live there.
  const built: BuiltObjective = run.objective
    ? { objective: run.objective, teachers: [], dispose: () => {} }
    : await buildObjective({
        ctx,
        // Post-training quantization trains on no objective: no teacher is run for it.
        job:
          job.quantization?.mode === 'ptq' ? { ...job, distillation: undefined, teachers: undefined } : job,
        student: { spec, net: placement.model },
        totalSteps,
        train,
        paths: { jobDir: ctx.jobDir, stageModelDir: run.stageModelDir, cacheDir: run.cacheDir },
        runKey: run.runKey,
      });
  for (const line of built.teachers) log0(`teacher ${line}`);
  const engine = makeEngine(ctx, run, placement, built.objective, lrSchedule, half, totalSteps);
  const checkpoints = new Checkpoints({
    ctx,
    // Its header names the model trained (a start directory's may be smaller than the job's): export builds it.
    job: { ...job, model: spec },
    batch,
    dir: run.checkpointDir,
    engine,
    lrSchedule,
    stepsPerEpoch,
    totalSteps,
    whole: {
      slots: new ParamGroups(placement.model, built.objective.params).slots,
      offset: placement.offset,
    },
  });
  const s = { ctx, run, backend: backend.name, train, test, placement, sampler, stepsPerEpoch, totalSteps };
  return { ...s, spec, built, engine, checkpoints, quantized, log0 };
}

/** The engine of this rank's part of the model; the objective's parameters live where the loss is computed. */
function makeEngine(
  ctx: WorkerContext,
  run: TrainRun,
  placement: Placement,
  objective: Objective,
  lrSchedule: LrSchedule,
  half: ReturnType<typeof halfPrecisionFor>,
  totalSteps: number,
): Engine {
  const { job, batch } = run;
  const ac = job.activation_checkpointing;
  if (!job.optimizer) throw new Error('a training job needs an optimizer');
  return new Engine({
    net: placement.net,
    seed: job.seed,
    objectiveParams: placement.computesLoss
      ? { specs: objective.params, initial: objective.initParams(job.seed) }
      : undefined,
    optimizer: job.optimizer,
    lrSchedule,
    betasSchedule: betasScheduleFor(job.scheduler),
    ...placement.groups,
    batch,
    gradientClipping: job.gradient_clipping,
    commDtype: job.comm.dtype,
    zeroStage: job.zero_optimization.stage,
    maxReuseDistance: job.zero_optimization.stage3_max_reuse_distance,
    activationCheckpointing: ac.enabled ? { everyNLayers: ac.every_n_layers } : undefined,
    halfPrecision: half,
    timeline: ctx.timeline,
    pruning: job.pruning && sparsityScheduleOf(job.pruning, totalSteps),
    clustering: job.clustering,
  });
}

/** Data parallel, or this rank's stage of the job's pipeline. */
function place(
  ctx: WorkerContext,
  job: JobBase,
  model: Net,
  batch: BatchPlan,
  half: 'fp16' | 'bf16' | undefined,
): Placement {
  if (!job.pipeline) return dataParallel(model, ctx.pg);
  if (batch.accumulation !== job.pipeline.micro_batches)
    throw new Error(
      `the batch plan accumulates ${batch.accumulation}, the pipeline has ${job.pipeline.micro_batches}`,
    );
  return pipelined({
    spec: job.pipeline,
    model,
    pg: ctx.pg,
    microBatch: batch.microBatch,
    // Activations and their gradients travel in the job's half precision, else in the gradients' wire dtype.
    wireDtype: half ?? job.comm.dtype,
    timeline: ctx.timeline,
  });
}

/** What the steps leave for the summary. */
interface Trained {
  readonly loss: number;
  /** fp16: the loss scale after the last step, and the steps skipped on overflow. */
  readonly lossScale: number;
  readonly skippedSteps: number;
  readonly trainSeconds: number;
  readonly timing: SteadyTiming;
}

/** The loop: from the engine's step (0, or the checkpoint's) to the last, one optimizer step at a time. */
async function trainSteps(s: Setup): Promise<Trained> {
  const { ctx, engine, sampler, stepsPerEpoch, totalSteps, run } = s;
  const { batch, job } = run;
  const perReplicaStep = batch.microBatch * batch.accumulation;
  const trainStart = performance.now();
  const timing = new SteadyTiming(engine.globalStep, totalSteps, batch.trainBatchSize);
  let loss = Number.NaN;
  let skippedSteps = 0;
  let lossScale = 1;
  const pacer = new RecordPacer();
  // A resumed run starts where the checkpoint's step puts it: the same epoch's permutation, the same position.
  for (let epoch = Math.floor(engine.globalStep / stepsPerEpoch); engine.globalStep < totalSteps; epoch++) {
    sampler.setEpoch(epoch);
    const indices = sampler.indices();
    for (
      let at = engine.globalStep % stepsPerEpoch;
      at < stepsPerEpoch && engine.globalStep < totalSteps;
      at++
    ) {
      // Let the event loop run once per step: with nothing to wait for (world 1: the all-reduce is a no-op) the
      // loop would otherwise never yield, and heartbeats, logs, reports and aborts would wait for its end; the
      // master's gRPC keepalive drops a worker silent for more than a few seconds.
      await new Promise((r) => setImmediate(r));
      ctx.signal.throwIfAborted();
      const input = stepInput(s, indices.subarray(at * perReplicaStep, (at + 1) * perReplicaStep));
      const stats = await s.placement.step(engine, input, timing.steady(engine.globalStep + 1));
      timing.record(stats);
      loss = stats.loss;
      skippedSteps = stats.skippedSteps;
      lossScale = stats.lossScale;
      const samplesPerS = timing.samplesPerSecond(stats.step, (performance.now() - trainStart) / 1000);
      const fp16: Record<string, number> = job.fp16.enabled
        ? { loss_scale: stats.lossScale, skipped: stats.skippedSteps }
        : {};
      ctx.progress({
        step: stats.step,
        totalSteps,
        // fp16: the scale and the steps skipped on overflow, as DeepSpeed's progress line shows them.
        metrics: { loss, lr: stats.lr, samples_per_s: samplesPerS, ...fp16 },
      });
      const every = job.eval.every_steps;
      const evaluates = every > 0 && stats.step % every === 0 && stats.step < totalSteps;
      const prints = stats.step % job.steps_per_print === 0 || stats.step === totalSteps;
      const paced = ctx.rank === 0 ? pacer.add(loss, stats.gradNorm, evaluates || prints) : undefined;
      if (paced) {
        const record: StepRecord = {
          kind: 'step',
          ...(run.label ? { label: run.label } : {}),
          step: stats.step,
          total_steps: totalSteps,
          epoch: epoch + 1,
          epochs: Math.ceil(totalSteps / stepsPerEpoch),
          ...paced,
          lr: stats.lr,
          ...fp16,
          samples_per_s: samplesPerS,
          comm_fraction: stats.stepMs > 0 ? stats.commMs / stats.stepMs : 0,
          rss_bytes: process.memoryUsage.rss(),
          time: Date.now() / 1000,
        };
        ctx.report(record);
      }
      const saved = await s.checkpoints.afterStep(stats.step);
      if (saved) s.log0(`checkpoint ${saved}`);
      if (evaluates) {
        const acc = await s.placement.evaluate(engine, s.test);
        reportEval(s, stats.step, acc);
      }
      if (prints) {
        // The same figures as the step's record (and so the progress bar): means over the steps since the last one.
        const shown = paced ?? { loss, grad_norm: stats.gradNorm };
        s.log0(
          `step ${stats.step}/${totalSteps} epoch ${epoch + 1} loss ${shown.loss.toFixed(4)} grad_norm ${shown.grad_norm.toFixed(3)} lr ${stats.lr.toPrecision(3)} samples/s ${samplesPerS.toFixed(0)}${job.fp16.enabled ? ` loss_scale ${stats.lossScale} skipped ${stats.skippedSteps}` : ''}`,
        );
      }
    }
  }
  return { loss, lossScale, skippedSteps, trainSeconds: (performance.now() - trainStart) / 1000, timing };
}

/** Rank 0 reports an evaluation of the test set. */
function reportEval(s: Setup, step: number, accuracy: number): void {
  if (s.ctx.rank !== 0) return;
  const record: EvalRecord = {
    kind: 'eval',
    ...(s.run.label ? { label: s.run.label } : {}),
    step,
    total_steps: s.totalSteps,
    accuracy,
    samples: s.test.length,
    time: Date.now() / 1000,
  };
  s.ctx.report(record);
}

/** One step's micro-batches: `indices` holds this replica's samples of the step, micro-batch after micro-batch. */
export function stepInput(s: Setup, indices: Int32Array): StepInput {
  const { run, engine, placement, train } = s;
  const { job, batch } = run;
  const step = engine.globalStep;
  const model = placement.model;
  const shape = (n: number) => [n, ...model.inputShape];
  const of = (micro: number) => indices.subarray(micro * batch.microBatch, (micro + 1) * batch.microBatch);
  // Masks from (seed, step, replica, micro): a resumed run draws the ones an uninterrupted run would, and every
  // pipeline stage the ones the unsplit model would.
  const mode = (micro: number) => ({
    training: true,
    seed: microBatchSeed(job.seed, step, placement.replica, micro),
  });
  return {
    step,
    mode,
    input: (micro) => {
      const mine = of(micro);
      return tf.tensor(gatherBatch(train, mine, 0, mine.length).inputs, shape(mine.length), model.inputDtype);
    },
    lossBatch: (micro, x) => lossBatch(s.built.objective, train, of(micro), step, mode(micro), model, x),
  };
}

/** A micro-batch with its loss: the samples as the model takes them, their labels, the teachers' outputs. */
async function lossBatch(
  objective: Objective,
  train: LabeledSet,
  indices: Int32Array,
  step: number,
  mode: MicroBatch['mode'],
  model: Net,
  x: tf.Tensor | undefined,
): Promise<MicroBatch> {
  const { inputs, labels } = gatherBatch(train, indices, 0, indices.length);
  const ob: ObjectiveBatch = {
    inputs: tf.tensor(inputs, [indices.length, ...model.inputShape], model.inputDtype),
    labels: tf.tensor1d(labels, 'int32'),
    indices,
    step,
  };
  const prepared = await objective.prepare(ob);
  return {
    x: x ?? ob.inputs,
    mode,
    taps: objective.taps,
    loss: (out, params) => objective.loss(out, params, ob, prepared),
    dispose: () => tf.dispose([ob.inputs, ob.labels, ...Object.values(prepared)]),
  };
}

/** After the last step: the model written, the test set evaluated, the figures gathered into the summary. */
async function finish(s: Setup, trained: Trained, start: number): Promise<RunSummary> {
  const { ctx, run, engine, placement, test, totalSteps } = s;
  const { job, batch } = run;
  let modelDirBytes = 0;
  let onnx: OnnxFigures | undefined;
  // A pruned model's values are read for its non-zero count even where it is not written.
  const trainedValues = run.outputDir || job.pruning ? await placement.modelValues(engine) : undefined;
  // Units and heads pruning write the smaller model they leave.
  const structure = job.pruning?.structure;
  const spec = s.spec;
  const model =
    trainedValues && structure === 'units' && (spec.type === 'mlp' || spec.type === 'cnn')
      ? withoutPrunedUnits(spec, trainedValues)
      : trainedValues && structure === 'heads' && spec.type === 'transformer'
        ? withoutPrunedHeads(spec, trainedValues)
        : { spec, values: trainedValues };
  const { values } = model;
  if (values && run.outputDir) {
    const q = s.quantized;
    const integers = q && { weights: q.weights, activations: q.activations.fixed ?? [] };
    modelDirBytes = await saveNetModel(run.outputDir, model.spec, values, {
      ...(integers ? { quantization: integers } : {}),
      ...(job.clustering ? { clusters: job.clustering.clusters } : {}),
    });
    if (job.onnx) {
      const shape = placement.model.inputShape;
      const written = await writeJobOnnx(run.outputDir, model.spec, values, integers, test, shape);
      ctx.log(written.line);
      onnx = written.figures;
    }
  }
  const accuracy = await placement.evaluate(engine, test);
  reportEval(s, engine.globalStep, accuracy);
  const inference = await placement.inference(engine, test);
  const figures = await placement.figures();
  const memory = engine.memory();
  const pipelineStage = job.pipeline ? { pipeline_stage: Math.floor(ctx.rank / placement.replicas) } : {};
  ctx.report({ kind: 'memory', rank: ctx.rank, zero_stage: engine.zeroStage, ...pipelineStage, ...memory });
  // The estimate (what --dry-run prints) covers the whole model on every rank: pipelines have none.
  const { optimizer } = job;
  const estimate =
    job.pipeline || !optimizer
      ? undefined
      : estimateMemory(
          { parameters: engine.groups.length, largestPair: engine.groups.largestPair },
          ctx.world,
          engine.zeroStage,
          optimizer,
          job.zero_optimization.stage3_max_reuse_distance,
          residentCopies(tf.getBackend()),
        );
  const parameters = job.pipeline ? countParams(placement.model) : engine.groups.length;
  return {
    kind: 'summary',
    backend: s.backend,
    world: ctx.world,
    train_batch_size: batch.trainBatchSize,
    steps: totalSteps,
    // In whole steps: a job of 8 epochs that drops the last partial batch of each trained 8, not 7.94.
    epochs: totalSteps / s.stepsPerEpoch,
    final_loss: trained.loss,
    test_accuracy: accuracy,
    ...trained.timing.figures(totalSteps, trained.trainSeconds),
    train_s: trained.trainSeconds,
    wall_s: (performance.now() - start) / 1000,
    parameters,
    model_bytes: parameters * Float32Array.BYTES_PER_ELEMENT,
    zero_stage: engine.zeroStage,
    // Rank 0's own state (in a pipeline: stage 0's blocks only).
    ...memoryFields(memory),
    ...(estimate ? { state_bytes_estimate: estimate.params + estimate.grads + estimate.optimizer } : {}),
    objective: s.built.objective.name,
    model_parameters: values ? values.reduce((n, v) => n + v.length, 0) : countParams(placement.model),
    ...(job.pruning && values ? { nonzero_parameters: countNonZero(values) } : {}),
    inference_samples_per_s: inference,
    ...(job.fp16.enabled ? { loss_scale: trained.lossScale, skipped_steps: trained.skippedSteps } : {}),
    ...(values && run.outputDir ? { model_dir: run.outputDir } : {}),
    model_dir_bytes: modelDirBytes,
    ...onnx,
    ...figures,
  };
}

function countNonZero(values: readonly Float32Array[]): number {
  let n = 0;
  for (const v of values) for (let i = 0; i < v.length; i++) if (v[i] !== 0) n++;
  return n;
}

/** The trained MLP a `low_rank:` run starts from, factorised by its SVD (every rank computes the same). */
function lowRankStart(
  spec: ModelSpec,
  trained: Net,
  lowRank: NonNullable<JobBase['low_rank']>,
  seed: number,
): { spec: ModelSpec; net: Net } {
  if (spec.type !== 'mlp') throw new Error(`low_rank factorises an MLP; this model is a ${spec.type}`);
  const factored = toLowRank(spec, trained.init(seed), lowRank);
  return { spec: factored.spec, net: withValues(buildNet(factored.spec), factored.values) };
}
