import { z } from 'zod';

/**
 * The job file's `data: {dataset: seqcls, …}`: the generated sequence-classification task of
 * src/data/sequence-task.ts. Defined here so that the config layer validates jobs without importing the data
 * layer; the generator takes the same spec.
 */

const positiveInt = z.number().int().positive();

const fields = {
  dataset: z.literal('seqcls'),
  vocab: z.number().int().min(3).default(20),
  seq_len: z.number().int().min(2).default(16),
  classes: z.number().int().min(2).max(256, 'labels are stored as bytes').default(8),
  train_size: positiveInt.default(8000),
  test_size: positiveInt.default(2000),
  /** The generator's seed (the data set's identity, not the job's seed: the same data for every job seed). */
  seed: z.number().int().min(0).default(0),
  /**
   * The share of TRAINING labels replaced by another class (uniform among the other classes); the test split stays
   * clean. Exactly round(label_noise · train_size) samples, chosen from the seed: the same noisy set for every
   * job seed. It makes the labels what real ones are, imperfect, so that a teacher which learned the rule through
   * the noise has something to teach a student beyond the label: on the mislabelled samples its soft labels still
   * point at the rule's class. 0 (the default) leaves every label the rule's.
   */
  label_noise: z.number().min(0).max(1).default(0),
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
  .strictObject({
    ...fields,
    drop_last: z.boolean().default(true),
    shuffle: z.boolean().default(true),
  })
  .superRefine(check);
