import { ConfigError } from './errors.ts';

/** DeepSpeed's batch arithmetic: train_batch_size = micro × accumulation × data-parallel size. */
export interface BatchPlan {
  trainBatchSize: number;
  microBatch: number;
  accumulation: number;
  dataParallel: number;
}

interface BatchKeys {
  train_batch_size?: number;
  train_micro_batch_size_per_gpu?: number;
  gradient_accumulation_steps?: number;
}

/** Derives the missing key(s) as DeepSpeed does; inconsistent values are an error that shows the arithmetic. */
export function resolveBatch(keys: BatchKeys, dataParallel: number, file = '<job>'): BatchPlan {
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
