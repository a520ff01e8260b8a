import { z } from 'zod';

/**
 * Where a data set of the user's own comes from, the same for every format: one source split by a seeded
 * `test_fraction`, or the two splits as two sources; and how the sampler reads it.
 */
export const sourceFields = {
  path: z.string().min(1).optional(),
  train: z.string().min(1).optional(),
  test: z.string().min(1).optional(),
  /** With one `path`: the share of its samples held out as the test split (chosen by `split_seed`). */
  test_fraction: z.number().gt(0).lt(1).default(0.2),
  split_seed: z.number().int().min(0).default(0),
  shuffle: z.boolean().default(true),
  drop_last: z.boolean().default(true),
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
