import { z } from 'zod';
import { checkSources, sourceFields } from './data-sources.ts';

/** The job file's `data: {format: csv | jsonl, …}`, read by src/data/file-data.ts. */
export const FileDataSpec = z
  .strictObject({
    ...sourceFields,
    // The discriminator a `format:` spec is given (the built-in sets are `dataset: mnist | seqcls`).
    dataset: z.literal('file').meta({ internal: true }),
    format: z
      .enum(['csv', 'jsonl'], { error: 'format is csv, jsonl, images or npy' })
      .describe('CSV with a header row, or JSON Lines (one object per line)'),
    label: z.string().min(1).describe("the label's column (key): a class index, or a class name"),
    features: z
      .array(z.string().min(1))
      .min(1, 'name at least one feature, or leave features out (every other column)')
      .refine((f) => new Set(f).size === f.length, 'features must differ')
      .optional()
      .describe('the feature columns (keys), in order; default every other column'),
    classes: z
      .array(z.union([z.string().min(1), z.number().int().min(0)]))
      .min(2, 'a classifier needs at least 2 classes')
      .max(256, 'labels are stored as bytes: at most 256 classes')
      .optional()
      .describe('the classes in index order; default the indices as given, or the names sorted'),
  })
  .meta({
    title: 'format: csv | jsonl',
    description:
      'A classification set of your own, one sample per row (CSV with a header) or per line (JSON Lines, one object each). Features are numbers (in JSON Lines also arrays of numbers, flattened); every problem in the data (a ragged row, a value that is not a number, a label outside `classes`) is refused before any worker starts, naming the file and the line.',
    examples: [
      `data:
  format: csv
  path: data/iris.csv        # one file, split by test_fraction with split_seed …
  # train: data/train.csv    # … or the splits as files
  # test: data/test.csv
  label: species
  features: [sepal_length, sepal_width, petal_length, petal_width]
  classes: [setosa, versicolor, virginica]`,
    ],
  })
  .superRefine((spec, ctx) => {
    checkSources(spec, ctx, 'one file');
    if (spec.features?.includes(spec.label)) {
      ctx.addIssue({
        code: 'custom',
        path: ['features'],
        message: `the label '${spec.label}' is not a feature`,
      });
    }
  });
export type FileDataSpec = z.infer<typeof FileDataSpec>;

/** A `format:` data section becomes the `dataset: images`, `npy` or `file` member of the data union. */
export function withFileDiscriminator(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  if (!('format' in input) || 'dataset' in input) return input;
  const dataset = input.format === 'images' || input.format === 'npy' ? input.format : 'file';
  return { dataset, ...input };
}
