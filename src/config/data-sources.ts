import { z } from 'zod';

/** How the sampler reads a training set, the same for every data set. */
export const samplerFields = {
  shuffle: z.boolean().default(true).describe("reshuffle the training set every epoch (from the job's seed)"),
  drop_last: z
    .boolean()
    .default(true)
    .describe(
      "as torch's DistributedSampler: cut an epoch's samples to a multiple of the data-parallel workers; `false` pads them by repeating samples",
    ),
};

/**
 * Where a data set of the user's own comes from, the same for every format: one source split by a seeded
 * `test_fraction`, or the two splits as two sources; and how the sampler reads it.
 */
export const sourceFields = {
  path: z
    .string()
    .min(1)
    .optional()
    .describe('the one source, relative to the job file, split into train and test by `test_fraction`'),
  train: z.string().min(1).optional().describe('the training split (with `test`, instead of `path`)'),
  test: z.string().min(1).optional().describe('the test split (with `train`, instead of `path`)'),
  test_fraction: z
    .number()
    .gt(0)
    .lt(1)
    .default(0.2)
    .describe(
      'with one `path`: the share of its samples held out as the test split (chosen by `split_seed`)',
    ),
  split_seed: z.number().int().min(0).default(0).describe('which samples `test_fraction` holds out'),
  ...samplerFields,
};

/** `path`, or both `train` and `test`; `one` says what a single source is, for the message. */
export function checkSources(
  spec: { path?: unknown; train?: unknown; test?: unknown },
  ctx: z.RefinementCtx,
  one: string,
): void {
  const files = spec.train !== undefined || spec.test !== undefined;
  if (spec.path !== undefined && files) {
    ctx.addIssue({ code: 'custom', path: ['path'], message: 'give path, or train and test, not both' });
  } else if (spec.path === undefined && (spec.train === undefined || spec.test === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: [spec.train === undefined ? 'train' : 'test'],
      message: `give path (${one}, split by test_fraction), or both train and test`,
    });
  }
}
