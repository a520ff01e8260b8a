import { z } from 'zod';

// Whether explicit cuts fit the model (below its block count) is checked against the model, before any worker starts.
const positiveInt = z.number().int().positive();

export const PipelineScheduleName = z.enum(['gpipe', '1f1b']);
export type PipelineScheduleName = z.infer<typeof PipelineScheduleName>;

export const PartitionSpec = z.union([
  z.enum(['parameters', 'uniform']),
  z
    .array(positiveInt)
    .min(1, 'give at least one cut, or use parameters / uniform')
    .refine((cuts) => cuts.every((c, i) => i === 0 || c > cuts[i - 1]), {
      message: 'cut indices must be strictly increasing',
    }),
]);
export type PartitionSpec = z.infer<typeof PartitionSpec>;

export const PipelineSpec = z
  .strictObject({
    stages: positiveInt.describe('pipeline stages, one worker each; the workers must be a multiple of it'),
    micro_batches: positiveInt.describe(
      "micro-batches per optimizer step and pipeline: the pipeline's accumulation steps",
    ),
    schedule: PipelineScheduleName.default('1f1b').describe(
      '`gpipe`: all forwards, then all backwards; `1f1b`: at most `stages` live activations',
    ),
    partition: PartitionSpec.default('parameters').describe(
      '`parameters` balances the parameter counts, `uniform` the block counts; a list gives the block indices where a new stage begins (`[2, 5]`: blocks 0–1, 2–4, 5–end)',
    ),
  })
  .superRefine((p, ctx) => {
    if (Array.isArray(p.partition) && p.partition.length !== p.stages - 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['partition'],
        message: `${p.partition.length} cut(s) make ${p.partition.length + 1} stages, but stages is ${p.stages}`,
      });
    }
  })
  .describe(
    "Pipeline parallelism: the model's blocks are cut into `stages` contiguous stages, one per worker of a pipeline, and each batch streams through them as `micro_batches` micro-batches. With world = stages × D, each stage has D data-parallel replicas.",
  );
export type PipelineSpec = z.infer<typeof PipelineSpec>;
