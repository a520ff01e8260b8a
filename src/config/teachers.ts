import { z } from 'zod';

const common = {
  weight: z
    .number()
    .min(0, 'a teacher weight is ≥ 0')
    .optional()
    .describe(
      "share of this teacher in the ensemble's soft target (normalised over the teachers; default equal)",
    ),
  task: z
    .number()
    .int()
    .min(0, 'a task is an index ≥ 0')
    .optional()
    .describe('multi-task distillation: the task whose batches this teacher distils'),
};

const SOURCES = 'a teacher is {model_dir: PATH}, {stage: NAME} or {checkpoint: PATH}';

export const TeacherSpec = z.union(
  [
    z.strictObject({
      model_dir: z
        .string()
        .min(1)
        .describe(
          "a model directory kd-launch wrote (an earlier job's model) or a TensorFlow.js model, relative to the job file",
        ),
      ...common,
    }),
    z.strictObject({
      stage: z.string().min(1).describe("an earlier stage's model (multi-stage jobs)"),
      seed: z
        .number()
        .int()
        .min(0)
        .optional()
        .describe("which seed's model of a stage that ran several; default its first"),
      ...common,
    }),
    z.strictObject({
      checkpoint: z
        .string()
        .min(1)
        .describe('an earlier checkpoint of the student, relative to the job file: self-distillation'),
      ...common,
    }),
  ],
  { error: SOURCES },
);
export type TeacherSpec = z.infer<typeof TeacherSpec>;

export const TeachersSpec = z
  .array(TeacherSpec)
  .min(1, 'list at least one teacher, or leave teachers out')
  .meta({
    description:
      'Where the teachers of the `distillation` objective come from. One teacher: general distillation. Several: their logits averaged into one soft target, each by its `weight`, or, when every teacher names a `task`, teacher t distils the batches of task t.',
    examples: [
      `teachers:
  - {model_dir: models/cnn}
  - {stage: teacher}
  - {checkpoint: ckpt/step-500}`,
    ],
  });

/** A one-line name of a teacher for logs and tables, e.g. `stage teacher` or `model_dir models/cnn`. */
export function describeTeacher(t: TeacherSpec): string {
  if ('stage' in t) return `stage ${t.stage}${t.seed !== undefined ? ` (seed ${t.seed})` : ''}`;
  if ('model_dir' in t) return `model_dir ${t.model_dir}`;
  return `checkpoint ${t.checkpoint}`;
}
