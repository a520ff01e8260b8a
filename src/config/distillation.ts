import { z } from 'zod';

const positiveInt = z.number().int().positive();
const layerIndex = z.number().int().min(0, 'a layer index is ≥ 0');
/** A layer by the adaptor's number, or by its name (a block's: a tfjs model's layer name, the zoo's `layer0`). */
const layer = z.union([layerIndex, z.string().min(1)]);
const layerRef = z.union([layer, z.tuple([layer, layer])], {
  error:
    'a layer is an index (e.g. 3) or a layer name (e.g. dense_1) or, for fsp, nst and mmd, a pair of them (e.g. [0, 3])',
});

/** Losses that compare two layers' features with each other (a Gram/FSP matrix), so take layer pairs. */
export const PAIR_LOSSES = ['fsp', 'nst', 'mmd'] as const;
export const HIDDEN_LOSSES = ['hidden_mse', 'cos', 'pkd', ...PAIR_LOSSES] as const;
export const ATTENTION_LOSSES = ['attention_mse', 'attention_ce'] as const;
export const MatchLossName = z.enum([...HIDDEN_LOSSES, ...ATTENTION_LOSSES]);
export type MatchLossName = z.infer<typeof MatchLossName>;

const PROJ_KIND = 'a projection is linear, relu or tanh: proj: [linear, dim_S, dim_T]';

/** One intermediate match: the student's `layer_S` feature against the teacher's `layer_T`. */
export const IntermediateMatchSpec = z
  .strictObject({
    layer_T: layerRef.describe(
      "the teacher's layer: its number by the adaptor, or its (block) name, e.g. a tfjs model's `conv2d_1`; a pair for fsp, nst and mmd",
    ),
    layer_S: layerRef.describe("the student's layer, as `layer_T`"),
    feature: z
      .enum(['hidden', 'attention'], { error: "feature is 'hidden' or 'attention'" })
      .describe('what is compared: hidden states, or attention maps'),
    loss: MatchLossName.describe('how the two features are compared'),
    weight: z
      .number()
      .min(0, 'a match weight is ≥ 0')
      .default(1)
      .describe("the match's weight in the total loss"),
    proj: z
      .tuple([z.enum(['linear', 'relu', 'tanh'], { error: PROJ_KIND }), positiveInt, positiveInt], {
        error: 'proj is [linear|relu|tanh, dim_S, dim_T], e.g. [linear, 64, 128]',
      })
      .optional()
      .describe(
        "[linear, dim_S, dim_T] maps the student's feature to the teacher's width with a trained projection (`relu` and `tanh` add that activation, as TextBrewer's)",
      ),
  })
  .superRefine((m, ctx) => {
    const pair = (PAIR_LOSSES as readonly string[]).includes(m.loss);
    for (const key of ['layer_T', 'layer_S'] as const) {
      if (pair !== Array.isArray(m[key])) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: pair
            ? `${m.loss} compares two layers: give a pair such as [0, 3]`
            : `${m.loss} takes one layer, not a pair`,
        });
      }
    }
    const wants = (ATTENTION_LOSSES as readonly string[]).includes(m.loss) ? 'attention' : 'hidden';
    if (m.feature !== wants) {
      ctx.addIssue({ code: 'custom', path: ['feature'], message: `${m.loss} needs feature '${wants}'` });
    }
    if (m.proj !== undefined && m.feature === 'attention') {
      ctx.addIssue({
        code: 'custom',
        path: ['proj'],
        message: 'attention maps are compared as they are: proj applies to hidden states only',
      });
    }
  });
export type IntermediateMatchSpec = z.output<typeof IntermediateMatchSpec>;

/**
 * How the temperature varies: `none`/`constant` keep `temperature`; flsw and cwsm (arXiv:1911.07471) give each sample
 * its own. TextBrewer's list form (`[flsw, beta, gamma]`, `[cwsm, beta]`) is accepted too.
 */
export const TemperatureSchedulerSpec = z.preprocess(
  (v) => {
    if (v === 'none' || v === 'constant' || v === 'flsw' || v === 'cwsm') return { type: v };
    if (Array.isArray(v) && v[0] === 'flsw') return { type: 'flsw', beta: v[1], gamma: v[2] };
    if (Array.isArray(v) && v[0] === 'cwsm') return { type: 'cwsm', beta: v[1] };
    return v;
  },
  z.discriminatedUnion(
    'type',
    [
      z.strictObject({ type: z.literal('none') }).describe('`temperature` throughout.'),
      z.strictObject({ type: z.literal('constant') }).describe('`temperature` throughout.'),
      z
        .strictObject({
          type: z.literal('flsw'),
          beta: z
            .number({ error: 'flsw needs beta and gamma, e.g. {type: flsw, beta: 1, gamma: 2}' })
            .describe('τ_i = temperature + beta · (mean(w) − w_i)'),
          gamma: z
            .number({ error: 'flsw needs beta and gamma, e.g. {type: flsw, beta: 1, gamma: 2}' })
            .describe("w_i = (1 − cos(student's logits, teacher's))^gamma"),
        })
        .describe(
          'A temperature per sample, lower (sharper targets) where student and teacher disagree more (arXiv:1911.07471).',
        ),
      z
        .strictObject({
          type: z.literal('cwsm'),
          beta: z
            .number({ error: 'cwsm needs beta, e.g. {type: cwsm, beta: 1}' })
            .describe(
              "τ_i = temperature + beta · (mean(w) − w_i), w_i = 1 / (the student's top probability + 0.001)",
            ),
        })
        .describe('A temperature per sample, lower where the student is less confident (arXiv:1911.07471).'),
    ],
    { error: 'temperature_scheduler is none, constant, {type: flsw, beta, gamma} or {type: cwsm, beta}' },
  ),
);
export type TemperatureSchedulerSpec = z.output<typeof TemperatureSchedulerSpec>;

/** TextBrewer's weight schedulers over the job's steps: linear_decay w·(1 − step/total), linear_growth w·step/total. */
export const WeightSchedulerName = z.enum(['none', 'linear_decay', 'linear_growth'], {
  error: 'a weight scheduler is none, linear_decay or linear_growth',
});
export type WeightSchedulerName = z.infer<typeof WeightSchedulerName>;

export const LogitsCacheSpec = z
  .strictObject({
    top_k: positiveInt
      .optional()
      .describe(
        "keep only each sample's k largest logits (the rest are stored as their mean); omitted: every class",
      ),
    dtype: z.enum(['fp32', 'fp16']).default('fp32').describe("the stored logits' dtype (fp32: exact)"),
  })
  .describe(
    'how cached teacher logits are stored: every class in fp32 (exact), or the top k, and/or in fp16',
  );
export type LogitsCacheSpec = z.infer<typeof LogitsCacheSpec>;

export const DistillationSpec = z
  .strictObject({
    temperature: z
      .number()
      .positive('the temperature must be > 0')
      .default(4)
      .describe("softens the teacher's and the student's distributions before they are compared"),
    temperature_scheduler: TemperatureSchedulerSpec.default({ type: 'none' }).describe(
      "how the temperature varies: `none` / `constant`, or per sample (flsw, cwsm); TextBrewer's list form `[flsw, beta, gamma]` is read too",
    ),
    hard_label_weight: z
      .number()
      .min(0, 'hard_label_weight is ≥ 0')
      .default(0)
      .describe('weight of the cross-entropy with the true labels'),
    hard_label_weight_scheduler: WeightSchedulerName.default('none').describe(
      "how hard_label_weight varies over the job's steps",
    ),
    kd_loss_type: z
      .enum(['ce', 'mse'], { error: "kd_loss_type is 'ce' or 'mse'" })
      .default('ce')
      .describe(
        "the soft-label loss: cross-entropy with the teacher's distribution, or the logits' squared error",
      ),
    kd_loss_weight: z
      .number()
      .min(0, 'kd_loss_weight is ≥ 0')
      .default(1)
      .describe('weight of the soft-label loss'),
    kd_loss_weight_scheduler: WeightSchedulerName.default('none').describe(
      "how kd_loss_weight varies over the job's steps",
    ),
    probability_shift: z
      .boolean()
      .default(false)
      .describe("swap the teacher's largest logit with the true label's where the teacher is wrong"),
    intermediate_matches: z
      .array(IntermediateMatchSpec)
      .default([])
      .describe("hidden states or attention maps of the student's layers matched to the teacher's"),
    is_caching_logits: z
      .boolean()
      .default(false)
      .describe(
        "compute the teacher's logits once over the training set (rank 0) and read them back instead of running the teacher",
      ),
    logits_cache: LogitsCacheSpec.optional(),
  })
  .superRefine((d, ctx) => {
    if (d.logits_cache !== undefined && !d.is_caching_logits) {
      ctx.addIssue({
        code: 'custom',
        path: ['logits_cache'],
        message: 'logits_cache applies only with is_caching_logits: true',
      });
    }
    if (d.is_caching_logits && d.intermediate_matches.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['is_caching_logits'],
        message: 'a cached teacher stores logits only: intermediate_matches need the live teacher',
      });
    }
  })
  .meta({
    description:
      "Knowledge distillation as the training objective: TextBrewer's DistillationConfig, same keys, same defaults. A step minimises kd_loss_weight(step) · KD(student, teacher; temperature) + hard_label_weight(step) · CE(student, labels) + Σ match.weight · match.loss(student layer_S, teacher layer_T). The teachers come from `teachers`.",
    examples: [
      `distillation:
  temperature: 4
  hard_label_weight: 0
  kd_loss_type: ce
  kd_loss_weight: 1
  intermediate_matches:
    - {layer_T: 3, layer_S: 1, feature: hidden, loss: hidden_mse, weight: 1, proj: [linear, 64, 128]}
    - {layer_T: [0, 3], layer_S: [0, 1], feature: hidden, loss: fsp, weight: 1}`,
    ],
  });
export type DistillationInput = z.input<typeof DistillationSpec>;
export type DistillationSpec = z.output<typeof DistillationSpec>;
