import { z } from 'zod';
import { checkSources, sourceFields } from './data-sources.ts';

/** One source: an `.npz` file holding both arrays, or the two arrays as `.npy` files. */
const NpySource = z.union([
  z.string().min(1),
  z.strictObject({ x: z.string().min(1), y: z.string().min(1) }),
]);
export type NpySource = z.infer<typeof NpySource>;

/**
 * The job file's `data: {format: npy, …}`, read by src/data/npy-data.ts. Defined here so that the config layer
 * validates jobs without importing the data layer.
 */
export const NpyDataSpec = z
  .strictObject({
    ...sourceFields,
    path: NpySource.optional().describe(
      'the one source, split into train and test by `test_fraction`: an .npz holding x and y, or {x: X.npy, y: Y.npy}',
    ),
    train: NpySource.optional().describe(
      'the training split, an .npz or {x, y} (with `test`, instead of `path`)',
    ),
    test: NpySource.optional().describe(
      'the test split, an .npz or {x, y} (with `train`, instead of `path`)',
    ),
    // The discriminator a `format: npy` spec is given.
    dataset: z.literal('npy').meta({ internal: true }),
    format: z.literal('npy').describe('NumPy arrays'),
    x: z.string().min(1).default('x').describe("the samples' member of an .npz (`np.savez(f, x=…, y=…)`)"),
    y: z.string().min(1).default('y').describe("the labels' member of an .npz"),
    classes: z
      .number()
      .int()
      .min(2, 'a classifier needs at least 2 classes')
      .max(256, 'labels are stored as bytes: at most 256 classes')
      .optional()
      .describe('the number of classes; default the largest label + 1'),
  })
  .meta({
    title: 'format: npy',
    description:
      "NumPy arrays of your own, as np.save, np.savez and np.savez_compressed write them: samples `x` (first axis: the samples; the rest: one sample's shape), float32/64 or any integer type, and their class indices `y` (1-D, integers or whole floats). x is never read whole: a `.npy` file, and a member an `.npz` stores uncompressed, is read per batch by position from the open file, so a set larger than memory trains; a member np.savez_compressed deflated is inflated into memory. Everything but x's values is checked before any worker starts, and refused naming the file and the member.",
    examples: [
      `data:
  format: npy
  path: data/digits.npz      # x and y in one .npz, split by test_fraction with split_seed …
  # path: {x: data/x.npy, y: data/y.npy}     # … or two .npy files
  # train: data/train.npz                    # … or the splits, each an .npz or a pair of .npy files
  # test: {x: data/test_x.npy, y: data/test_y.npy}
  classes: 10`,
    ],
  })
  .superRefine((spec, ctx) => {
    checkSources(spec, ctx, 'an .npz, or {x: X.npy, y: Y.npy}');
    if (spec.x === spec.y) {
      ctx.addIssue({ code: 'custom', path: ['y'], message: `x and y name the same member '${spec.x}'` });
    }
  });
export type NpyDataSpec = z.infer<typeof NpyDataSpec>;
