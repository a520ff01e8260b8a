/**
 * The training job's checkpoints: what it adds to the engine's mechanics (src/engine/checkpoint.ts). The job's
 * model spec goes into every header so that `kd-launch export` needs nothing else; the sampler position and the
 * LR are stored for the record but derived from the step on resume (epoch = ⌊step / stepsPerEpoch⌋, the
 * position within it = step mod stepsPerEpoch, lr = schedule(step)), and dropout masks are a function of
 * (seed, step, replica, micro-batch): a resumed run repeats an uninterrupted one bit for bit. Files hold ranges of
 * the whole model's flat space, whatever the layout (data parallel, ZeRO stage, pipeline) that wrote them.
 */
import { basename, resolve } from 'node:path';
import { type BatchPlan, type ResumedFrom, resolveBatch, resolveResumedBatch } from '../config/batch.ts';
import type { JobBase } from '../config/schema.ts';
import {
  type CheckpointHeader,
  type Consolidated,
  checkpointsHeld,
  consolidate,
  LATEST,
  newestHeader,
  newestVerified,
  type RankState,
  readAllRanks,
  readCheckpointHeader,
  resolveCheckpoint,
  saveCheckpoint,
} from '../engine/checkpoint.ts';
import type { Engine } from '../engine/engine.ts';
import type { TensorSlot } from '../engine/flat-params.ts';
import type { LrSchedule } from '../engine/lr-schedule.ts';
import type { OptimizerState } from '../engine/optimizer.ts';
import type { WorkerContext } from './context.ts';

/** The header's `meta` for a checkpoint of the training job. */
export interface TrainMeta {
  job_name: string;
  /** The job's model spec: what `kd-launch export` builds before it loads the parameters. */
  model: NonNullable<JobBase['model']>;
  seed: number;
  optimizer: NonNullable<JobBase['optimizer']>;
  train_batch_size: number;
  micro_batch: number;
  accumulation: number;
  steps_per_epoch: number;
  total_steps: number;
  /** A pipelined run's layout (its files hold ranges of the whole model all the same). */
  pipeline?: JobBase['pipeline'];
  /** Where the next step reads the data (derived from the step on resume; stored to be checked and read). */
  sampler: { epoch: number; position: number; shuffle: boolean; seed: number };
  /** The rate of the next step. */
  next_lr: number;
  /** Dropout masks are derived, not drawn: no generator state to save beyond the seed and the step. */
  rng: { seed: number; dropout: string };
}

/** The checkpoint a run will resume from, as its header says, read before the run starts. */
export interface ResumeSource {
  readonly from: ResumedFrom;
  readonly stepsPerEpoch: number;
  /** The checkpoint's step, and its step directory. */
  readonly step: number;
  readonly stepDir: string;
}

/**
 * The checkpoint the job's `resume` will load (see Checkpoints.resume), from its rank-0 header alone: undefined when
 * the job does not resume, when there is no checkpoint yet, or when it cannot be read (the load says why).
 */
export function resumeSource(
  job: JobBase,
  dir: string | undefined,
  jobDir: string,
): ResumeSource | undefined {
  if (job.resume === undefined || job.resume === 'never') return undefined;
  let header: CheckpointHeader | undefined;
  try {
    if (job.resume !== 'auto') header = readCheckpointHeader(resolveCheckpoint(resolve(jobDir, job.resume)));
    else if (dir !== undefined) header = newestHeader(dir);
  } catch {
    return undefined;
  }
  const meta = header?.meta as Partial<TrainMeta> | undefined;
  if (!header || typeof meta?.train_batch_size !== 'number' || typeof meta.steps_per_epoch !== 'number')
    return undefined;
  return {
    from: { name: basename(header.stepDir), trainBatchSize: meta.train_batch_size, world: header.world },
    stepsPerEpoch: meta.steps_per_epoch,
    step: header.step,
    stepDir: header.stepDir,
  };
}

/**
 * A run's batch plan at `world`: the job's own, or, when it resumes from a checkpoint, the one that keeps that
 * checkpoint's global batch (resolveResumedBatch), so that a job resumes at any world size without pinning
 * train_batch_size. `dir` is the run's absolute checkpoint directory.
 */
export function runBatch(
  job: JobBase,
  world: number,
  dir: string | undefined,
  jobDir: string,
  file?: string,
): { batch: BatchPlan; source: ResumeSource | undefined } {
  const source = resumeSource(job, dir, jobDir);
  const batch = source ? resolveResumedBatch(job, world, source.from, file) : resolveBatch(job, world, file);
  return { batch, source };
}

export interface CheckpointsOptions {
  readonly ctx: Pick<WorkerContext, 'rank' | 'world' | 'pg' | 'jobDir' | 'log' | 'restartCount'>;
  /** The run's job: its `checkpoint`, `resume`, model, seed and optimizer. */
  readonly job: JobBase;
  readonly batch: BatchPlan;
  /** Absolute checkpoint directory, when the run checkpoints. */
  readonly dir: string | undefined;
  readonly engine: Engine;
  readonly lrSchedule: LrSchedule;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  /**
   * The whole model's flat layout (every pipeline stage's tensors, then the objective's) and where this engine's
   * flat space begins in it: files hold ranges of the whole model, whatever the layout that wrote them.
   */
  readonly whole: { readonly slots: readonly TensorSlot[]; readonly offset: number };
}

/** The run's checkpoints: resume at the start, a save when one is due after each step. */
export class Checkpoints {
  readonly #o: CheckpointsOptions;

  constructor(o: CheckpointsOptions) {
    this.#o = o;
  }

  /**
   * Applies the job's `resume`: `auto` loads the newest checkpoint of `checkpoint.dir` that verifies (see
   * `newestVerified`; what it passed over is logged), a path loads that checkpoint (a missing or corrupt one is an
   * error), `never` loads nothing. Without `resume`, a `checkpoint.dir` that already holds checkpoints is refused:
   * nothing retrains from step 0 over them unless asked; a restarted job resumes `auto`. Returns the step directory
   * loaded, if any.
   */
  async resume(): Promise<string | undefined> {
    const { ctx, job, dir, engine, whole } = this.#o;
    // A restarted job (kd-launch --max-restarts) continues from its newest checkpoint, whatever it started with.
    const mode = job.resume ?? (ctx.restartCount > 0 ? 'auto' : undefined);
    if (mode === 'never') return undefined;
    if (mode === undefined) {
      // The launcher refuses this before any worker starts; a program of one's own (prepare()) meets it here.
      const held = dir && checkpointsHeld(dir);
      if (held) throw new Error(`checkpoint.dir ${held}`);
      return undefined;
    }
    let stepDir: string;
    let state: Consolidated;
    if (mode === 'auto') {
      const found = dir ? newestVerified(dir) : undefined;
      for (const why of found?.passedOver ?? []) if (ctx.rank === 0) ctx.log(`warning: passed over: ${why}`);
      if (!found) return undefined;
      if (found.noLatest && ctx.rank === 0) {
        ctx.log(
          `warning: ${dir} has no '${LATEST}': resuming from ${found.stepDir}, its newest complete checkpoint`,
        );
      }
      ({ stepDir, state } = found);
    } else {
      stepDir = resolveCheckpoint(resolve(ctx.jobDir, mode));
      // Every rank's file, joined: this rank takes its own range, whatever world size, ZeRO stage and pipeline
      // layout wrote them.
      state = consolidate(readAllRanks(stepDir));
    }
    this.#check(stepDir, state);
    const from = whole.offset;
    const to = from + engine.groups.length;
    const optimizer: OptimizerState = {};
    for (const [k, v] of Object.entries(state.optimizer.state))
      optimizer[k] = v instanceof Float32Array ? v.subarray(from, to) : v;
    await engine.restore({
      step: state.step,
      params: state.params.subarray(from, to),
      optimizer: { type: state.optimizer.type, state: optimizer },
    });
    return stepDir;
  }

  #check(stepDir: string, state: Consolidated): void {
    const { ctx, job, batch, stepsPerEpoch, whole } = this.#o;
    const meta = state.meta as Partial<TrainMeta>;
    const where = `checkpoint ${stepDir}`;
    const same =
      state.slots.length === whole.slots.length &&
      state.slots.every((s, i) => s.shape.join('x') === whole.slots[i].shape.join('x'));
    if (!same) throw new Error(`${where} holds a different model (its tensor shapes differ from the job's)`);
    if (meta.train_batch_size !== batch.trainBatchSize || meta.steps_per_epoch !== stepsPerEpoch) {
      throw new Error(
        `${where} was written with train_batch_size ${meta.train_batch_size} (${meta.steps_per_epoch} steps per epoch); this job has ${batch.trainBatchSize} (${stepsPerEpoch}): the data order would not continue`,
      );
    }
    if (meta.seed !== job.seed && ctx.rank === 0) {
      ctx.log(
        `warning: ${where} was trained with seed ${meta.seed}, this job has ${job.seed}: data order and dropout change from here`,
      );
    }
  }

  /** Saves a checkpoint after step `step` when it is due (every `every_steps`, and after the last step). */
  async afterStep(step: number): Promise<string | undefined> {
    const { ctx, job, batch, dir, engine, lrSchedule, stepsPerEpoch, totalSteps, whole } = this.#o;
    const spec = job.checkpoint;
    if (!spec || !dir) return undefined;
    if (step % spec.every_steps !== 0 && step !== totalSteps) return undefined;
    if (!job.model || !job.optimizer || !job.data) throw new Error('not a training job');
    const meta: TrainMeta = {
      job_name: job.name,
      model: job.model,
      seed: job.seed,
      optimizer: job.optimizer,
      train_batch_size: batch.trainBatchSize,
      micro_batch: batch.microBatch,
      accumulation: batch.accumulation,
      steps_per_epoch: stepsPerEpoch,
      total_steps: totalSteps,
      ...(job.pipeline ? { pipeline: job.pipeline } : {}),
      sampler: {
        epoch: Math.floor(step / stepsPerEpoch),
        position: step % stepsPerEpoch,
        shuffle: job.data.shuffle,
        seed: job.seed,
      },
      next_lr: lrSchedule(step),
      rng: { seed: job.seed, dropout: 'deriveSeed(seed, DROPOUT_STREAM, step, replica, micro, layer)' },
    };
    const snap = engine.snapshot();
    const state: RankState = {
      ...snap,
      range: { start: snap.range.start + whole.offset, end: snap.range.end + whole.offset },
      rank: ctx.rank,
      world: ctx.world,
      slots: whole.slots,
      meta: meta as unknown as Record<string, unknown>,
    };
    return saveCheckpoint(dir, spec.keep, state, ctx.pg);
  }
}
