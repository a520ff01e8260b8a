import { ConfigError } from './errors.ts';

/** DeepSpeed's batch arithmetic: train_batch_size = micro × accumulation × data-parallel size. */
export interface BatchPlan {
  trainBatchSize: number;
  microBatch: number;
  accumulation: number;
  dataParallel: number;
  /** The checkpoint whose global batch this plan keeps, when that changed the job's own plan (resolveResumedBatch). */
  resumed?: ResumedFrom;
}

/** What a resumed job's batch plan keeps of the checkpoint it resumes from. */
export interface ResumedFrom {
  /** The checkpoint, as its step directory is named: `step-40`. */
  readonly name: string;
  readonly trainBatchSize: number;
  /** The world size that wrote it. */
  readonly world: number;
}

interface BatchKeys {
  train_batch_size?: number;
  train_micro_batch_size_per_gpu?: number;
  gradient_accumulation_steps?: number;
  /** A pipelined job: its world is stages × data-parallel size and its micro-batches are its accumulation. */
  pipeline?: { readonly stages: number; readonly micro_batches: number };
}

/**
 * Derives the missing key(s) as DeepSpeed does; inconsistent values are an error that shows the arithmetic.
 * `world` is the data-parallel size, except for a pipelined job, whose data-parallel size is world / stages.
 */
export function resolveBatch(keys: BatchKeys, world: number, file = '<job>'): BatchPlan {
  if (keys.pipeline) return resolvePipelineBatch(keys, keys.pipeline, world, file);
  const dataParallel = world;
  const {
    train_batch_size: total,
    train_micro_batch_size_per_gpu: micro,
    gradient_accumulation_steps: accum,
  } = keys;
  const fail = (field: string, message: string): never => {
    throw new ConfigError(file, [{ path: field, line: undefined, message }]);
  };
  if (total !== undefined && micro !== undefined && accum !== undefined) {
    if (micro * accum * dataParallel !== total) {
      fail(
        'train_batch_size',
        `train_batch_size ${total} != train_micro_batch_size_per_gpu ${micro} × gradient_accumulation_steps ${accum} × data-parallel size ${dataParallel} = ${micro * accum * dataParallel}`,
      );
    }
    return { trainBatchSize: total, microBatch: micro, accumulation: accum, dataParallel };
  }
  if (total !== undefined && micro !== undefined) {
    const a = total / (micro * dataParallel);
    if (!Number.isInteger(a)) {
      fail(
        'train_batch_size',
        `train_batch_size ${total} is not divisible by train_micro_batch_size_per_gpu ${micro} × data-parallel size ${dataParallel}`,
      );
    }
    return { trainBatchSize: total, microBatch: micro, accumulation: a, dataParallel };
  }
  if (total !== undefined) {
    const a = accum ?? 1;
    const m = total / (a * dataParallel);
    if (!Number.isInteger(m)) {
      fail(
        'train_batch_size',
        `train_batch_size ${total} is not divisible by gradient_accumulation_steps ${a} × data-parallel size ${dataParallel}`,
      );
    }
    return { trainBatchSize: total, microBatch: m, accumulation: a, dataParallel };
  }
  if (micro === undefined) {
    return fail(
      'train_micro_batch_size_per_gpu',
      'give two of train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps',
    );
  }
  const a = accum ?? 1;
  return { trainBatchSize: micro * a * dataParallel, microBatch: micro, accumulation: a, dataParallel };
}

/**
 * A pipelined job's batch arithmetic: world = stages × D data-parallel replicas, and the pipeline's micro-batches
 * are its gradient accumulation steps (DeepSpeed's convention), so train_batch_size = micro × micro_batches × D.
 * Errors name the fields to change.
 */
export function resolvePipelineBatch(
  keys: BatchKeys,
  pipeline: { readonly stages: number; readonly micro_batches: number },
  world: number,
  file = '<job>',
): BatchPlan {
  const { stages, micro_batches: m } = pipeline;
  const fail = (field: string, message: string): never => {
    throw new ConfigError(file, [{ path: field, line: undefined, message }]);
  };
  if (world % stages !== 0) {
    fail(
      'pipeline.stages',
      `pipeline.stages ${stages} does not divide the world of ${world} workers: the world must be pipeline.stages × data-parallel replicas (use a multiple of ${stages} workers, or stages dividing ${world})`,
    );
  }
  const d = world / stages;
  const accum = keys.gradient_accumulation_steps;
  if (accum !== undefined && accum !== m) {
    fail(
      'gradient_accumulation_steps',
      `gradient_accumulation_steps ${accum} != pipeline.micro_batches ${m}: a pipeline's micro-batches are its accumulation steps; give the same value or leave gradient_accumulation_steps out`,
    );
  }
  const { train_batch_size: total, train_micro_batch_size_per_gpu: micro } = keys;
  const arithmetic = `pipeline.micro_batches ${m} × data-parallel size ${d} (world ${world} / pipeline.stages ${stages})`;
  if (micro !== undefined) {
    if (total !== undefined && total !== micro * m * d) {
      fail(
        'train_batch_size',
        `train_batch_size ${total} != train_micro_batch_size_per_gpu ${micro} × ${arithmetic} = ${micro * m * d}`,
      );
    }
    return { trainBatchSize: micro * m * d, microBatch: micro, accumulation: m, dataParallel: d };
  }
  if (total === undefined) {
    return fail(
      'train_micro_batch_size_per_gpu',
      'give train_micro_batch_size_per_gpu or train_batch_size (the pipeline gives the accumulation steps)',
    );
  }
  const derived = total / (m * d);
  if (!Number.isInteger(derived)) {
    fail('train_batch_size', `train_batch_size ${total} is not divisible by ${arithmetic}`);
  }
  return { trainBatchSize: total, microBatch: derived, accumulation: m, dataParallel: d };
}

/**
 * The batch plan of a job that resumes from a checkpoint, at `world`: the checkpoint's train_batch_size, for the
 * data order continues only with the same global batch (the sampler's position is a function of the step and of
 * it, not of the world size). The job's micro-batch is kept when it divides (accumulation = total / (micro ×
 * data-parallel size)), else its accumulation (micro-batch = total / (accumulation × data-parallel size)); a
 * pipeline's accumulation is its micro_batches, always kept. A job that pins another train_batch_size is refused,
 * as is a world where neither divides. `resumed` is set when the plan is not the job's own.
 */
export function resolveResumedBatch(
  keys: BatchKeys,
  world: number,
  from: ResumedFrom,
  file = '<job>',
): BatchPlan {
  const own = resolveBatch(keys, world, file);
  const total = from.trainBatchSize;
  const resuming = `resuming ${from.name} (train_batch_size ${total}, written at world ${from.world})`;
  const fail = (field: string, message: string): never => {
    throw new ConfigError(file, [{ path: field, line: undefined, message }]);
  };
  if (keys.train_batch_size !== undefined && keys.train_batch_size !== total) {
    fail(
      'train_batch_size',
      `train_batch_size ${keys.train_batch_size}, but ${resuming}: the data order would not continue; leave train_batch_size out (or make it ${total}) to resume, or give resume: never to start over`,
    );
  }
  if (own.trainBatchSize === total) return own;
  const { microBatch: micro, accumulation: accum, dataParallel: dp } = own;
  const plan = (microBatch: number, accumulation: number): BatchPlan => ({
    trainBatchSize: total,
    microBatch,
    accumulation,
    dataParallel: dp,
    resumed: from,
  });
  const perRank = total / dp;
  if (!keys.pipeline && Number.isInteger(perRank / micro)) return plan(micro, perRank / micro);
  if (Number.isInteger(perRank / accum)) return plan(perRank / accum, accum);
  return fail('train_micro_batch_size_per_gpu', `${resuming}: ${indivisible(keys, world, total, own)}`);
}

/** Why a checkpoint's global batch does not split at this world, and what to change: one clause. */
function indivisible(keys: BatchKeys, world: number, total: number, own: BatchPlan): string {
  const { microBatch: micro, accumulation: accum, dataParallel: dp } = own;
  const perRank = total / dp;
  const size = keys.pipeline
    ? `data-parallel size ${dp} (world ${world} / pipeline.stages ${keys.pipeline.stages})`
    : `data-parallel size ${dp}`;
  if (!Number.isInteger(perRank))
    return `${total} is not divisible by the ${size}; resume at a world size that divides it`;
  if (keys.pipeline)
    return `at ${size} each replica takes ${perRank} samples a step, not divisible by pipeline.micro_batches ${accum}; give pipeline.micro_batches dividing ${perRank}, or resume at another world size`;
  return `at ${size} each rank takes ${perRank} samples a step, divisible neither by train_micro_batch_size_per_gpu ${micro} nor by gradient_accumulation_steps ${accum}; give a train_micro_batch_size_per_gpu dividing ${perRank}`;
}

/** What a plan that keeps a checkpoint's global batch says of it, in one line. */
export function resumeNote(plan: BatchPlan): string | undefined {
  const from = plan.resumed;
  if (!from) return undefined;
  return `resuming ${from.name} (train_batch_size ${from.trainBatchSize}, written at world ${from.world}): at data-parallel size ${plan.dataParallel} that is micro-batch ${plan.microBatch} × accumulation ${plan.accumulation}`;
}
