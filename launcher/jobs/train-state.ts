/**
 * The training job's checkpoints: what it adds to the engine's mechanics (src/engine/checkpoint.ts). The job's
 * model spec goes into every header so that `kd-launch export` needs nothing else; the sampler position and the
 * LR are stored for the record but derived from the step on resume (epoch = ⌊step / stepsPerEpoch⌋, the
 * position within it = step mod stepsPerEpoch, lr = schedule(step)), and dropout masks are a function of
 * (seed, step, rank, micro-batch): a resumed run repeats an uninterrupted one bit for bit.
 */
import { resolve } from 'node:path';
import type { ParsedJob } from '../../src/config/schema.ts';
import {
  type Consolidated,
  consolidate,
  latestCheckpoint,
  type RankState,
  readAllRanks,
  resolveCheckpoint,
  saveCheckpoint,
} from '../../src/engine/checkpoint.ts';
import type { Engine } from '../../src/engine/engine.ts';
import type { LrSchedule } from '../../src/engine/lr-schedule.ts';
import type { WorkerContext } from '../worker-context.ts';

/** The header's `meta` for a checkpoint of the built-in training job. */
export interface TrainMeta {
  job_name: string;
  /** The job's model spec: what `kd-launch export` builds before it loads the parameters. */
  model: NonNullable<ParsedJob['model']>;
  seed: number;
  optimizer: NonNullable<ParsedJob['optimizer']>;
  train_batch_size: number;
  micro_batch: number;
  accumulation: number;
  steps_per_epoch: number;
  total_steps: number;
  /** Where the next step reads the data (derived from the step on resume; stored to be checked and read). */
  sampler: { epoch: number; position: number; shuffle: boolean; seed: number };
  /** The rate of the next step. */
  next_lr: number;
  /** Dropout masks are derived, not drawn: no generator state to save beyond the seed and the step. */
  rng: { seed: number; dropout: string };
}

export interface TrainStateOptions {
  ctx: WorkerContext;
  engine: Engine;
  lrSchedule: LrSchedule;
  stepsPerEpoch: number;
  totalSteps: number;
}

export class TrainState {
  readonly #o: TrainStateOptions;
  readonly #dir: string | undefined;

  constructor(o: TrainStateOptions) {
    this.#o = o;
    const spec = o.ctx.job.checkpoint;
    this.#dir = spec ? resolve(o.ctx.jobDir, spec.dir) : undefined;
  }

  /** Where checkpoints go, when the job has a `checkpoint` section. */
  get dir(): string | undefined {
    return this.#dir;
  }

  /**
   * Applies the job's `resume`: `auto` loads `checkpoint.dir/latest` when there is one, a path loads that
   * checkpoint (a missing one is an error). Returns the step directory loaded, if any.
   */
  async resume(): Promise<string | undefined> {
    const { ctx, engine } = this.#o;
    const { job } = ctx;
    if (job.resume === undefined) return undefined;
    let stepDir: string | undefined;
    if (job.resume === 'auto') {
      stepDir = this.#dir ? latestCheckpoint(this.#dir) : undefined;
      if (!stepDir) return undefined;
    } else {
      stepDir = resolveCheckpoint(resolve(ctx.jobDir, job.resume));
    }
    // Every rank's file, joined: this rank takes its own range, whatever world size and ZeRO stage wrote them.
    const state = consolidate(readAllRanks(stepDir));
    this.#check(stepDir, state);
    await engine.restore(state);
    return stepDir;
  }

  #check(stepDir: string, state: Consolidated): void {
    const { ctx, engine, stepsPerEpoch } = this.#o;
    const meta = state.meta as Partial<TrainMeta>;
    const where = `checkpoint ${stepDir}`;
    const slots = engine.slots;
    const same =
      state.slots.length === slots.length &&
      state.slots.every((s, i) => s.shape.join('x') === slots[i].shape.join('x'));
    if (!same) throw new Error(`${where} holds a different model (its tensor shapes differ from the job's)`);
    if (meta.train_batch_size !== ctx.batch?.trainBatchSize || meta.steps_per_epoch !== stepsPerEpoch) {
      throw new Error(
        `${where} was written with train_batch_size ${meta.train_batch_size} (${meta.steps_per_epoch} steps per epoch); this job has ${ctx.batch?.trainBatchSize} (${stepsPerEpoch}): the data order would not continue`,
      );
    }
    if (meta.seed !== ctx.job.seed && ctx.rank === 0) {
      ctx.log(
        `warning: ${where} was trained with seed ${meta.seed}, this job has ${ctx.job.seed}: data order and dropout change from here`,
      );
    }
  }

  /** Saves a checkpoint after step `step` when it is due (every `every_steps`, and after the last step). */
  async afterStep(step: number): Promise<string | undefined> {
    const { ctx, engine, lrSchedule, stepsPerEpoch, totalSteps } = this.#o;
    const spec = ctx.job.checkpoint;
    if (!spec || !this.#dir) return undefined;
    if (step % spec.every_steps !== 0 && step !== totalSteps) return undefined;
    const { job, batch } = ctx;
    if (!job.model || !job.optimizer || !batch || !job.data) throw new Error('not a training job');
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
      sampler: {
        epoch: Math.floor(step / stepsPerEpoch),
        position: step % stepsPerEpoch,
        shuffle: job.data.shuffle,
        seed: job.seed,
      },
      next_lr: lrSchedule(step),
      rng: { seed: job.seed, dropout: 'deriveSeed(seed, DROPOUT_STREAM, step, rank, micro, layer)' },
    };
    const snap = engine.snapshot();
    const state: RankState = {
      ...snap,
      rank: ctx.rank,
      world: ctx.world,
      slots: engine.slots,
      meta: meta as unknown as Record<string, unknown>,
    };
    return saveCheckpoint(this.#dir, spec.keep, state, ctx.pg);
  }
}
