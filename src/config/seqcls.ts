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

/** Parameters of the task; the defaults are the sizes measured for the distillation experiment. */
export const SeqClsSpec = z.strictObject(fields).superRefine(checkVocab);
export type SeqClsSpec = z.infer<typeof SeqClsSpec>;

/** The task as a job's data section: the task's parameters plus the sampler's. */
export const SeqClsDataSpec = z
  .strictObject({
    ...fields,
    drop_last: z.boolean().default(true),
    shuffle: z.boolean().default(true),
  })
  .superRefine(checkVocab);
