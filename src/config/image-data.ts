import { z } from 'zod';
import { checkSources, sourceFields } from './data-sources.ts';

const positiveInt = z.number().int().positive();

/**
 * The job file's `data: {format: images, …}`: an image folder of the user's own, one sub-folder per class (PNG and
 * JPEG files), decoded, resized and normalised as configured. Paths are relative to the job file.
 *
 *   data:
 *     format: images
 *     path: data/shapes          # one root (split by test_fraction with split_seed) …
 *     # train: data/train        # … or the splits as two roots with the same class folders
 *     # test: data/test
 *     size: [32, 32]             # height, width: every image resized to it (bilinear); default: the first image's
 *     channels: 3                # 3 (RGB) or 1 (grey, BT.601 luma)
 *     mean: [0.5, 0.5, 0.5]      # optional, per channel, after scaling pixels to [0, 1] …
 *     std: [0.25, 0.25, 0.25]    # … (x − mean) / std
 *     classes: [circle, square]  # the class folders in index order; default: every folder, sorted
 *
 * A sample is the image in NHWC order (height × width × channels), what a CNN of the same `input` takes.
 */
export const ImageDataSpec = z
  .strictObject({
    ...sourceFields,
    /** Internal: the discriminator a `format: images` spec is given. */
    dataset: z.literal('images'),
    format: z.literal('images'),
    size: z.tuple([positiveInt, positiveInt]).optional(),
    channels: z.union([z.literal(1), z.literal(3)], { error: 'channels is 1 (grey) or 3 (RGB)' }).default(3),
    mean: z.array(z.number()).optional(),
    std: z.array(z.number().positive()).optional(),
    classes: z
      .array(z.string().min(1))
      .min(2, 'a classifier needs at least 2 classes')
      .max(256, 'labels are stored as bytes: at most 256 classes')
      .optional(),
  })
  .superRefine((spec, ctx) => {
    checkSources(spec, ctx, 'one folder of class folders');
    for (const key of ['mean', 'std'] as const) {
      const v = spec[key];
      if (v !== undefined && v.length !== spec.channels) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `give one value per channel (${spec.channels}), not ${v.length}`,
        });
      }
    }
  });
export type ImageDataSpec = z.infer<typeof ImageDataSpec>;
