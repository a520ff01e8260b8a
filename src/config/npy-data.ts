import { z } from 'zod';
import { checkSources, sourceFields } from './data-sources.ts';

/** One source: an `.npz` file holding both arrays, or the two arrays as `.npy` files. */
const NpySource = z.union([
  z.string().min(1),
  z.strictObject({ x: z.string().min(1), y: z.string().min(1) }),
]);
export type NpySource = z.infer<typeof NpySource>;

/**
 * The job file's `data: {format: npy, …}`: NumPy arrays of the user's own, samples `x` (first axis: the samples;
 * the rest: one sample's shape) and their class indices `y` (1-D, one per sample). Paths are relative to the job
 * file.
 *
 *   data:
 *     format: npy
 *     path: data/digits.npz      # one .npz holding x and y (np.savez or np.savez_compressed), split by
 *                                # test_fraction with split_seed …
 *     # path: {x: data/x.npy, y: data/y.npy}     # … or the two arrays as .npy files (np.save) …
 *     # train: data/train.npz                    # … or the splits, each an .npz or a pair of .npy files
 *     # test: {x: data/test_x.npy, y: data/test_y.npy}
 *     x: x                       # the .npz members (default x and y; `np.savez(f, x=…, y=…)`)
 *     y: y
 *     classes: 10                # default: the largest label + 1
 *
 * x is float32/64 or any integer type (converted to fp32 as a batch is read); y holds integers (any width, or
 * floats that are whole numbers). x is never read whole: a `.npy` file, and a member an `.npz` stores
 * uncompressed (np.savez), is read per batch by position from the open file, so a set larger than memory trains;
 * a member np.savez_compressed deflated is inflated into memory. Everything but x's values is checked before any
 * worker starts (each array's header, dtype, shape and length, the file's size, every label), and refused naming
 * the file and the member. Defined here so that the config layer validates jobs without importing the data layer.
 */
export const NpyDataSpec = z
  .strictObject({
    ...sourceFields,
    path: NpySource.optional(),
    train: NpySource.optional(),
    test: NpySource.optional(),
    /** Internal: the discriminator a `format: npy` spec is given. */
    dataset: z.literal('npy'),
    format: z.literal('npy'),
    x: z.string().min(1).default('x'),
    y: z.string().min(1).default('y'),
    classes: z
      .number()
      .int()
      .min(2, 'a classifier needs at least 2 classes')
      .max(256, 'labels are stored as bytes: at most 256 classes')
      .optional(),
  })
  .superRefine((spec, ctx) => {
    checkSources(spec, ctx, 'an .npz, or {x: X.npy, y: Y.npy}');
    if (spec.x === spec.y) {
      ctx.addIssue({ code: 'custom', path: ['y'], message: `x and y name the same member '${spec.x}'` });
    }
  });
export type NpyDataSpec = z.infer<typeof NpyDataSpec>;
