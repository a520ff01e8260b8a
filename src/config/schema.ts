import { z } from 'zod';

/**
 * The job file's schema. Key names and meanings follow DeepSpeed's config (batch arithmetic, optimizer,
 * scheduler, clipping) so users' configs carry over; everything kd-launch adds sits beside them.
 */

const positiveInt = z.number().int().positive();

export const BackendName = z.enum(['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']);
export type BackendName = z.infer<typeof BackendName>;

export const ModelSpec = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('mlp'),
    layers: z.array(positiveInt).min(2, 'an MLP needs at least an input and an output size'),
    activation: z.enum(['relu', 'tanh', 'gelu']).default('relu'),
    dropout: z.number().min(0).lt(1).default(0),
  }),
]);
export type ModelSpec = z.infer<typeof ModelSpec>;

export const DataSpec = z.strictObject({
  dataset: z.literal('mnist'),
  drop_last: z.boolean().default(true),
  shuffle: z.boolean().default(true),
});
export type DataSpec = z.infer<typeof DataSpec>;

const lr = z.number().positive('the learning rate must be > 0');
export const OptimizerSpec = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('SGD'),
    params: z.strictObject({
      lr,
      momentum: z.number().min(0).lt(1).default(0),
      nesterov: z.boolean().default(false),
      weight_decay: z.number().min(0).default(0),
    }),
  }),
  ...(['Adam', 'AdamW', 'Lamb'] as const).map((type) =>
    z.strictObject({
      type: z.literal(type),
      params: z.strictObject({
        lr,
        betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
        eps: z.number().positive().default(1e-8),
        weight_decay: z.number().min(0).default(0),
      }),
    }),
  ),
]);
export type OptimizerSpec = z.infer<typeof OptimizerSpec>;

const warmupType = z.enum(['log', 'linear']).default('log');
const stepCount = z.number().int().min(0);
/**
 * DeepSpeed's `scheduler` section (WarmupLR, WarmupDecayLR, WarmupCosineLR). `total_num_steps` defaults to
 * the job's total number of steps.
 */
export const SchedulerSpec = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('WarmupLR'),
    params: z.strictObject({
      warmup_min_lr: z.number().min(0).default(0),
      warmup_max_lr: z.number().positive().default(0.001),
      warmup_num_steps: stepCount.default(1000),
      warmup_type: warmupType,
    }),
  }),
  z.strictObject({
    type: z.literal('WarmupDecayLR'),
    params: z.strictObject({
      warmup_min_lr: z.number().min(0).default(0),
      warmup_max_lr: z.number().positive().default(0.001),
      warmup_num_steps: stepCount.default(1000),
      warmup_type: warmupType,
      total_num_steps: positiveInt.optional(),
    }),
  }),
  z.strictObject({
    type: z.literal('WarmupCosineLR'),
    params: z.strictObject({
      warmup_min_ratio: z.number().min(0).max(1).default(0),
      warmup_num_steps: stepCount.default(1000),
      cos_min_ratio: z.number().min(0).max(1).default(0.0001),
      warmup_type: warmupType,
      total_num_steps: positiveInt.optional(),
    }),
  }),
]);
export type SchedulerSpec = z.infer<typeof SchedulerSpec>;

export const CommSpec = z.strictObject({
  /** Per-collective deadline; the error names the op, its sequence number and the peer waited on. */
  timeout_s: z.number().positive().default(300),
  /** Wire dtype of gradient all-reduce. */
  dtype: z.enum(['fp32', 'fp16', 'bf16']).default('fp32'),
});
export type CommSpec = z.infer<typeof CommSpec>;

export const JobSchema = z
  .strictObject({
    name: z.string().min(1).default('job'),
    backend: BackendName.default('auto'),
    seed: z.number().int().min(0).default(42),
    /** A user program run in every worker (torchrun's `script.py`): it exports `main(ctx)`. */
    script: z.string().min(1).optional(),
    /** Free-form settings handed to a user script as `ctx.args`. */
    args: z.record(z.string(), z.unknown()).default({}),
    model: ModelSpec.optional(),
    data: DataSpec.optional(),
    train_batch_size: positiveInt.optional(),
    train_micro_batch_size_per_gpu: positiveInt.optional(),
    gradient_accumulation_steps: positiveInt.optional(),
    gradient_clipping: z.number().min(0).default(0),
    optimizer: OptimizerSpec.optional(),
    scheduler: SchedulerSpec.optional(),
    epochs: positiveInt.optional(),
    steps: positiveInt.optional(),
    steps_per_print: positiveInt.default(50),
    eval: z.strictObject({ every_steps: z.number().int().min(0).default(0) }).default({ every_steps: 0 }),
    comm: CommSpec.default({ timeout_s: 300, dtype: 'fp32' }),
  })
  .superRefine((job, ctx) => {
    if (job.script !== undefined) return;
    for (const key of ['model', 'data', 'optimizer'] as const) {
      if (job[key] === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `a training job needs '${key}' (or give 'script')`,
        });
      }
    }
    if (job.epochs === undefined && job.steps === undefined) {
      ctx.addIssue({ code: 'custom', path: ['steps'], message: "give 'steps' or 'epochs'" });
    }
    if (job.epochs !== undefined && job.steps !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['steps'], message: "give 'steps' or 'epochs', not both" });
    }
    const given = [job.train_batch_size, job.train_micro_batch_size_per_gpu, job.gradient_accumulation_steps];
    if (given.filter((v) => v !== undefined).length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['train_micro_batch_size_per_gpu'],
        message: 'give two of train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps',
      });
    }
  });

export type JobInput = z.input<typeof JobSchema>;
export type ParsedJob = z.output<typeof JobSchema>;
