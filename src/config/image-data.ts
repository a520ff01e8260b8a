import { z } from 'zod';
import { checkSources, sourceFields } from './data-sources.ts';

const positiveInt = z.number().int().positive();

/** The job file's `data: {format: images, …}`, read by src/data/image-folder.ts. */
export const ImageDataSpec = z
  .strictObject({
    ...sourceFields,
    // The discriminator a `format: images` spec is given.
    dataset: z.literal('images').meta({ internal: true }),
    format: z.literal('images').describe('an image folder'),
    size: z
      .tuple([positiveInt, positiveInt])
      .optional()
      .describe("height, width: every image resized to it (bilinear); default the first image's"),
    channels: z
      .union([z.literal(1), z.literal(3)], { error: 'channels is 1 (grey) or 3 (RGB)' })
      .default(3)
      .describe('3 (RGB) or 1 (grey, BT.601 luma)'),
    mean: z
      .array(z.number())
      .optional()
      .describe('per channel, subtracted after scaling pixels to [0, 1]: (x − mean) / std'),
    std: z.array(z.number().positive()).optional().describe('per channel, divided by after `mean`'),
    classes: z
      .array(z.string().min(1))
      .min(2, 'a classifier needs at least 2 classes')
      .max(256, 'labels are stored as bytes: at most 256 classes')
      .optional()
      .describe('the class folders in index order; default every folder, sorted'),
  })
  .meta({
    title: 'format: images',
    description:
      'An image folder of your own, one sub-folder per class (PNG and JPEG files), decoded, resized and normalised as configured. A sample is the image in NHWC order (height × width × channels), what a CNN of the same `input` takes.',
    examples: [
      `data:
  format: images
  path: data/shapes          # one root (split by test_fraction with split_seed) …
  # train: data/train        # … or the splits as two roots with the same class folders
  # test: data/test
  size: [32, 32]
  channels: 3
  mean: [0.5, 0.5, 0.5]
  std: [0.25, 0.25, 0.25]
  classes: [circle, square]`,
    ],
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
