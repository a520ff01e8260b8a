import { z } from 'zod';
import { BACKEND_NAMES } from '../backend/names.ts';
import { DistillationSpec } from './distillation.ts';
import { FileDataSpec, withFileDiscriminator } from './file-data.ts';
import { ImageDataSpec } from './image-data.ts';
import { type JobStageSpec, jobStageIssues, jobStageSchema, mergeJobStage } from './job-stages.ts';
import { MAX_MODEL_LAYERS } from './limits.ts';
import { NpyDataSpec } from './npy-data.ts';
import { PipelineSpec } from './pipeline.ts';
import { Bf16Spec, checkPrecisionExclusive, Fp16Spec } from './precision.ts';
import { SeqClsDataSpec } from './seqcls.ts';
import { TeachersSpec } from './teachers.ts';
import { TRACE_OFF, TraceSpec } from './trace.ts';
import { TransformerSpec } from './transformer.ts';

/**
 * The job file's schema. Key names and meanings follow DeepSpeed's config (batch arithmetic, optimizer,
 * scheduler, clipping) so users' configs carry over; everything kd-launch adds sits beside them.
 */

const positiveInt = z.number().int().positive();

export const BackendName = z.enum(BACKEND_NAMES);
export type BackendName = z.infer<typeof BackendName>;

/**
 * The message for an unknown `type` of a discriminated section: it lists the known ones, e.g.
 * `unknown optimizer type "Adagrad" (known: SGD, Adam, AdamW, Lamb)`.
 */
function unknownType(section: string) {
  return (issue: { code?: string; input?: unknown; options?: unknown }) => {
    if (issue.code !== 'invalid_union' || !Array.isArray(issue.options)) return undefined;
    const type = (issue.input as { type?: unknown } | undefined)?.type;
    const given =
      type === undefined ? `a ${section} needs a 'type'` : `unknown ${section} type ${JSON.stringify(type)}`;
    return `${given} (known: ${issue.options.map(String).join(', ')})`;
  };
}

const activation = z.enum(['relu', 'tanh', 'gelu']).default('relu');
const dropout = z.number().min(0).lt(1).default(0);

/**
 * One convolution block of a CNN: a 2-D convolution (NHWC, `kernel`×`kernel`, `filters` output channels) with
 * its bias and the model's activation, then a `pool`×`pool` max-pool of stride `pool` when `pool` > 1.
 */
export const ConvBlockSpec = z.strictObject({
  filters: positiveInt,
  kernel: positiveInt,
  stride: positiveInt.default(1),
  /** `same` keeps height and width (at stride 1); `valid` shrinks them by kernel − 1. */
  padding: z.enum(['same', 'valid']).default('same'),
  /** Max-pool window and stride after this block; omitted: the model's `pool`. 1 turns it off. */
  pool: positiveInt.optional(),
});
export type ConvBlockSpec = z.infer<typeof ConvBlockSpec>;

/**
 * A TensorFlow.js layers model of your own: `model: {path: ./my-model}`, the directory `model.save` or
 * `tensorflowjs_converter` wrote (src/models/tfjs-dir.ts). The path is relative to the job file.
 */
export const TfjsModelSpec = z.strictObject({ type: z.literal('tfjs'), path: z.string().min(1) });

/**
 * A model built in code: `model: {module: ./model.ts, export: build}` names a module (relative to the job file)
 * whose export, a function called with `options`, returns a `tf.LayersModel` or a Net, or a promise of either
 * (src/models/model-module.ts). The default export when `export` is left out.
 */
export const ModuleModelSpec = z.strictObject({
  type: z.literal('module'),
  module: z.string().regex(/\.m?[jt]s$/, 'a model module is a .ts, .mts, .js or .mjs file'),
  export: z.string().min(1).default('default'),
  options: z.record(z.string(), z.unknown()).default({}),
});
export type ModuleModelSpec = z.infer<typeof ModuleModelSpec>;

/** `{path: …}` without a type is a model directory of the user's own, `{module: …}` a model built in code. */
function withUserModelType(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input) || 'type' in input) return input;
  if ('path' in input) return { type: 'tfjs', ...input };
  return 'module' in input ? { type: 'module', ...input } : input;
}

export const ModelSpec = z.preprocess(
  withUserModelType,
  z.discriminatedUnion(
    'type',
    [
      z.strictObject({
        type: z.literal('mlp'),
        layers: z
          .array(positiveInt)
          .min(2, 'an MLP needs at least an input and an output size')
          .max(
            MAX_MODEL_LAYERS + 1,
            `an MLP has at most ${MAX_MODEL_LAYERS} layers (${MAX_MODEL_LAYERS + 1} sizes)`,
          ),
        activation,
        dropout,
      }),
      /**
       * A convolutional classifier on NHWC images:
       *
       *   model:
       *     type: cnn
       *     input: [28, 28, 1]              # height, width, channels of one sample
       *     conv:                           # conv blocks in order: conv + bias + activation (+ max-pool)
       *       - { filters: 16, kernel: 3 }  # stride 1, padding same, pool 2 by default
       *       - { filters: 32, kernel: 3 }
       *     pool: 2                         # max-pool after every block (a block's own `pool` wins); 1: none
       *     dense: [128]                    # hidden dense layers after flattening (activation, then dropout)
       *     classes: 10                     # linear outputs (logits)
       *     activation: relu
       *     dropout: 0.25                   # after each hidden dense layer
       */
      z.strictObject({
        type: z.literal('cnn'),
        input: z.tuple([positiveInt, positiveInt, positiveInt]),
        conv: z
          .array(ConvBlockSpec)
          .min(1, 'a CNN needs at least one conv block')
          .max(MAX_MODEL_LAYERS, `a CNN has at most ${MAX_MODEL_LAYERS} conv blocks`),
        pool: positiveInt.default(2),
        dense: z
          .array(positiveInt)
          .max(MAX_MODEL_LAYERS, `a CNN has at most ${MAX_MODEL_LAYERS} dense layers`)
          .default([]),
        classes: positiveInt,
        activation,
        dropout,
      }),
      TransformerSpec,
      TfjsModelSpec,
      ModuleModelSpec,
    ],
    { error: unknownType('model') },
  ),
);
export type ModelSpec = z.infer<typeof ModelSpec>;

export const DataSpec = z.preprocess(
  withFileDiscriminator,
  z.discriminatedUnion(
    'dataset',
    [
      z.strictObject({
        dataset: z.literal('mnist'),
        drop_last: z.boolean().default(true),
        shuffle: z.boolean().default(true),
      }),
      /** The generated sequence-classification task (src/data/sequence-task.ts). */
      SeqClsDataSpec,
      /** A data set of the user's own, from CSV or JSON Lines files (src/data/file-data.ts). */
      FileDataSpec,
      /** An image folder of the user's own, one sub-folder per class (src/data/image-folder.ts). */
      ImageDataSpec,
      /** NumPy arrays of the user's own, .npz or .npy, read from disk per batch (src/data/npy-data.ts). */
      NpyDataSpec,
    ],
    {
      error: (issue) =>
        issue.code === 'invalid_union'
          ? 'give dataset: mnist | seqcls, or format: csv | jsonl | images | npy (a data set of your own)'
          : undefined,
    },
  ),
);
export type DataSpec = z.infer<typeof DataSpec>;

const lr = z.number().positive('the learning rate must be > 0');
export const OptimizerSpec = z.discriminatedUnion(
  'type',
  [
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
  ],
  { error: unknownType('optimizer') },
);
export type OptimizerSpec = z.infer<typeof OptimizerSpec>;

const warmupType = z.enum(['log', 'linear']).default('log');
const stepCount = z.number().int().min(0);
/**
 * DeepSpeed's `scheduler` section (WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle). `total_num_steps` defaults to
 * the job's total number of steps.
 */
export const SchedulerSpec = z.discriminatedUnion(
  'type',
  [
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
    z.strictObject({
      /**
       * DeepSpeed's 1Cycle: lr climbs from cycle_min_lr to cycle_max_lr over cycle_first_step_size steps, falls
       * back over cycle_second_step_size, then decays as cycle_min_lr / (1 + decay_lr_rate · steps after the
       * cycle / decay_step_size). With cycle_momentum, Adam's and LAMB's β1 cycles the other way
       * (cycle_max_mom → cycle_min_mom) with β2 held at 0.99; SGD has no betas and keeps its momentum.
       */
      type: z.literal('OneCycle'),
      params: z.strictObject({
        cycle_min_lr: z.number().min(0),
        cycle_max_lr: z.number().positive(),
        decay_lr_rate: z.number().min(0).default(0),
        cycle_first_step_size: positiveInt.default(2000),
        cycle_second_step_size: positiveInt.optional(),
        // Accepted so DeepSpeed configs load; DeepSpeed itself no longer applies the staircase.
        cycle_first_stair_count: stepCount.default(0),
        cycle_second_stair_count: stepCount.optional(),
        decay_step_size: stepCount.default(0),
        cycle_momentum: z.boolean().default(true),
        cycle_min_mom: z.number().min(0).lt(1).default(0.8),
        cycle_max_mom: z.number().min(0).lt(1).default(0.9),
        decay_mom_rate: z.number().min(0).default(0),
      }),
    }),
  ],
  { error: unknownType('scheduler') },
);
export type SchedulerSpec = z.infer<typeof SchedulerSpec>;

export const CommSpec = z.strictObject({
  /** Per-collective deadline; the error names the op, its sequence number and the peer waited on. */
  timeout_s: z.number().positive().default(300),
  /** Wire dtype of gradient all-reduce. */
  dtype: z.enum(['fp32', 'fp16', 'bf16']).default('fp32'),
  /**
   * Across nodes every data-plane link is encrypted and authenticated (CURVE); `insecure: true` turns that off,
   * for a network where every host and every process that can reach the workers' ports is trusted.
   */
  insecure: z.boolean().default(false),
});
export type CommSpec = z.infer<typeof CommSpec>;

/**
 * Periodic checkpoints: every `every_steps` optimizer steps each rank writes what it owns into
 * `dir/step-N/rank-R.bin`, then rank 0 points `dir/latest` at it and keeps the newest `keep` checkpoints.
 */
export const CheckpointSpec = z.strictObject({
  dir: z.string().min(1),
  every_steps: positiveInt,
  keep: positiveInt.default(2),
});
export type CheckpointSpec = z.infer<typeof CheckpointSpec>;

/** DeepSpeed's `zero_optimization`: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters partitioned. */
export const ZeroSpec = z.strictObject({
  stage: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)], {
    error: 'zero_optimization.stage is 0, 1, 2 or 3',
  }),
});
export type ZeroSpec = z.infer<typeof ZeroSpec>;

/** Recompute activations in backward instead of keeping them, keeping the input of every n-th block. */
export const ActivationCheckpointingSpec = z.strictObject({
  enabled: z.boolean().default(false),
  every_n_layers: positiveInt.default(1),
});

/** Every key of a job, as one shape: a stage (src/config/stages.ts) overrides any of them but a few. */
const jobFields = {
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
  comm: CommSpec.default({ timeout_s: 300, dtype: 'fp32', insecure: false }),
  zero_optimization: ZeroSpec.default({ stage: 0 }),
  activation_checkpointing: ActivationCheckpointingSpec.default({ enabled: false, every_n_layers: 1 }),
  fp16: Fp16Spec.default(Fp16Spec.parse({})),
  bf16: Bf16Spec.default({ enabled: false }),
  /** Cut the model into pipeline stages, one per worker, with micro-batches streaming through them. */
  pipeline: PipelineSpec.optional(),
  /** Write a Chrome-trace / Perfetto timeline of the run (one lane per rank). */
  trace: TraceSpec.default(TRACE_OFF),
  /** Train with a teacher's soft labels and intermediate matches (TextBrewer's DistillationConfig). */
  distillation: DistillationSpec.optional(),
  checkpoint: CheckpointSpec.optional(),
  /**
   * `auto`: continue from the newest checkpoint of `checkpoint.dir` that verifies (`latest`, else the newest step
   * directory; a corrupt one is passed over with a warning); a path: that checkpoint (or step) directory; `never`:
   * start from step 0 even where `checkpoint.dir` holds checkpoints (without `resume` that is refused).
   */
  resume: z.union([z.literal('auto'), z.literal('never'), z.string().min(1)]).optional(),
  /** Where rank 0 writes the trained model at the end, as a tfjs layers-model directory. */
  output_dir: z.string().min(1).optional(),
  /** Where the `distillation:` objective's teachers come from (src/config/teachers.ts). */
  teachers: TeachersSpec.optional(),
};

const JobBaseObject = z.strictObject(jobFields);
/** A job's keys without `stages`: what one training run (the whole job, or one stage merged over it) reads. */
export type JobBase = z.output<typeof JobBaseObject>;

const JobObject = JobBaseObject.extend({
  /** Named partial jobs run in order by the same workers (src/config/stages.ts). */
  stages: z
    .array(jobStageSchema(jobFields))
    .min(1, 'list at least one stage, or leave stages out')
    .optional(),
});

type JobIssue = { path: (string | number)[]; message: string };

/**
 * What a training job (the top level, or one stage merged over it) needs beyond its fields' own shapes. `own`
 * says whether the stage itself gives a key, so that an issue names the stage's field or the top-level one.
 */
function trainingIssues(
  job: JobBase,
  prefix: (string | number)[],
  own: (key: string) => boolean,
): JobIssue[] {
  const issues: JobIssue[] = [];
  const at = (key: string) => (own(key) ? [...prefix, key] : [key]);
  const where = prefix.length > 0 ? `stage '${job.name.split('/').pop() ?? ''}' ` : '';
  for (const key of ['model', 'data', 'optimizer'] as const) {
    if (job[key] === undefined) {
      issues.push({
        path: [...prefix, key],
        message: `a training ${where || 'job '}needs '${key}'${prefix.length > 0 ? '' : " (or give 'script')"}`,
      });
    }
  }
  if (job.epochs === undefined && job.steps === undefined) {
    issues.push({ path: [...prefix, 'steps'], message: "give 'steps' or 'epochs'" });
  }
  if (job.epochs !== undefined && job.steps !== undefined) {
    issues.push({ path: at('steps'), message: "give 'steps' or 'epochs', not both" });
  }
  const given = [job.train_batch_size, job.train_micro_batch_size_per_gpu, job.gradient_accumulation_steps];
  if (given.filter((v) => v !== undefined).length === 0) {
    issues.push({
      path: [...prefix, 'train_micro_batch_size_per_gpu'],
      message: 'give two of train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps',
    });
  }
  if (job.distillation !== undefined && job.teachers === undefined) {
    issues.push({
      path: at('distillation'),
      message: `${where}distillation needs 'teachers' (e.g. teachers: [{model_dir: PATH}])`,
    });
  }
  if (job.teachers !== undefined && job.distillation === undefined) {
    issues.push({
      path: at('teachers'),
      message: `${where}teachers are used by a 'distillation' section, and there is none`,
    });
  }
  const teachers = job.teachers ?? [];
  const tasks = teachers.filter((t) => t.task !== undefined).length;
  if (tasks > 0 && tasks < teachers.length) {
    issues.push({
      path: at('teachers'),
      message: 'give every teacher a task (multi-task distillation) or none',
    });
  }
  if (tasks > 0 && teachers.some((t) => t.weight !== undefined)) {
    issues.push({
      path: at('teachers'),
      message: 'a teacher weight mixes an ensemble; multi-task teachers take none',
    });
  }
  return issues;
}

export const JobSchema = JobObject.superRefine((job, ctx) => {
  checkPrecisionExclusive(job, ctx);
  if (job.resume === 'auto' && job.checkpoint === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['resume'],
      message: "'auto' needs a 'checkpoint' section to look in",
    });
  }
  if (job.script !== undefined) {
    if (job.stages !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['stages'],
        message: "stages are training jobs: give 'script' or 'stages', not both",
      });
    }
    return;
  }
  const issues: JobIssue[] = [];
  if (job.stages === undefined) {
    issues.push(...trainingIssues(job, [], () => false));
    (job.teachers ?? []).forEach((t, j) => {
      if ('stage' in t) {
        issues.push({
          path: ['teachers', j, 'stage'],
          message: `a {stage: ${t.stage}} teacher needs a multi-stage job ('stages:')`,
        });
      }
    });
  } else {
    job.stages.forEach((stage: JobStageSpec, i) => {
      const gives = (key: string) => (stage as Record<string, unknown>)[key] !== undefined;
      issues.push(...trainingIssues(mergeJobStage(job, stage), ['stages', i], gives));
    });
    issues.push(...jobStageIssues(job));
  }
  for (const issue of issues) ctx.addIssue({ code: 'custom', ...issue });
});

export type JobInput = z.input<typeof JobSchema>;
export type ParsedJob = z.output<typeof JobSchema>;
