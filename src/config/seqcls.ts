import { z } from 'zod';
import { samplerFields } from './data-sources.ts';

/**
 * The job file's `data: {dataset: seqcls, …}`: the generated sequence-classification task of
 * src/data/sequence-task.ts. Defined here so that the config layer validates jobs without importing the data
 * layer; the generator takes the same spec.
 */

const positiveInt = z.number().int().positive();

const fields = {
  dataset: z.literal('seqcls'),
  vocab: z.number().int().min(3).default(20).describe('token ids 0 … vocab − 1'),
  seq_len: z.number().int().min(2).default(16).describe('tokens per sample'),
  classes: z.number().int().min(2).max(256, 'labels are stored as bytes').default(8).describe('classes'),
  train_size: positiveInt.default(8000).describe('training samples'),
  test_size: positiveInt.default(2000).describe('test samples'),
  seed: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe(
      "the generator's seed: the data set's identity, not the job's seed (the same data for every job seed)",
    ),
  label_noise: z
    .number()
    .min(0)
    .max(1)
    .default(0)
    .describe(
      'the share of TRAINING labels replaced by another class (uniform among the others), exactly round(label_noise · train_size) samples chosen from the seed; the test split stays clean. Imperfect labels, as real ones are, give a teacher that learned the rule through the noise something to teach beyond the label',
    ),
};

function checkVocab(spec: { vocab: number; classes: number }, ctx: z.RefinementCtx): void {
  if (spec.vocab - 1 < spec.classes) {
    ctx.addIssue({
      code: 'custom',
      path: ['vocab'],
      message: `vocab ${spec.vocab} leaves ${spec.vocab - 1} content tokens for ${spec.classes} classes (need at least one per class)`,
    });
  }
}

/**
 * Below (classes − 1)/classes, the rule's class stays every input's most frequent label (1 − p against p/(classes − 1)
 * for each other class): past it, the noise, not the rule, would be what there is to learn.
 */
function checkNoise(spec: { label_noise: number; classes: number }, ctx: z.RefinementCtx): void {
  if (spec.label_noise >= (spec.classes - 1) / spec.classes) {
    ctx.addIssue({
      code: 'custom',
      path: ['label_noise'],
      message: `label_noise ${spec.label_noise} must be below (classes − 1)/classes = ${((spec.classes - 1) / spec.classes).toFixed(3)}, or the rule's class is no longer the most frequent label`,
    });
  }
}

function check(spec: { vocab: number; classes: number; label_noise: number }, ctx: z.RefinementCtx): void {
  checkVocab(spec, ctx);
  checkNoise(spec, ctx);
}

/** Parameters of the task; the defaults are the sizes measured for the distillation experiment. */
export const SeqClsSpec = z.strictObject(fields).superRefine(check);
export type SeqClsSpec = z.infer<typeof SeqClsSpec>;

/** The task as a job's data section: the task's parameters plus the sampler's. */
export const SeqClsDataSpec = z
  .strictObject({ ...fields, ...samplerFields })
  .superRefine(check)
  .describe(
    "The generated sequence-classification task (src/data/sequence-task.ts): each sample is `seq_len` token ids with one marker, and its class is the class of the token after the marker. A Transformer's task; the same data for every job seed.",
  );
