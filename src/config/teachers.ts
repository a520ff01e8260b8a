import { z } from 'zod';

/**
 * A job's `teachers:` list: where each teacher of the `distillation:` objective comes from.
 *
 *   teachers:
 *     - {model_dir: models/cnn}          # a model directory kd-launch wrote (output_dir of an earlier job)
 *     - {stage: teacher}                 # an earlier stage's output model (multi-stage jobs)
 *     - {checkpoint: ckpt/step-500}      # an earlier checkpoint of a student: self-distillation
 *
 * One teacher: general distillation. Several: their logits averaged into one soft target, each by its `weight`
 * (normalised; default equal), or, when every teacher names a `task`, teacher t distils the batches of task t.
 * Paths are relative to the job file.
 */

const common = {
  /** Share of this teacher in the ensemble's soft target (normalised over the teachers). */
  weight: z.number().min(0, 'a teacher weight is ≥ 0').optional(),
  /** Multi-task distillation: the task whose batches this teacher distils. */
  task: z.number().int().min(0, 'a task is an index ≥ 0').optional(),
};

const SOURCES = 'a teacher is {model_dir: PATH}, {stage: NAME} or {checkpoint: PATH}';

export const TeacherSpec = z.union(
  [
    z.strictObject({ model_dir: z.string().min(1), ...common }),
    z.strictObject({
      stage: z.string().min(1),
      /** Which seed's model of a stage that ran several; default its first. */
      seed: z.number().int().min(0).optional(),
      ...common,
    }),
    z.strictObject({ checkpoint: z.string().min(1), ...common }),
  ],
  { error: SOURCES },
);
export type TeacherSpec = z.infer<typeof TeacherSpec>;

export const TeachersSpec = z.array(TeacherSpec).min(1, 'list at least one teacher, or leave teachers out');

/** A one-line name of a teacher for logs and tables, e.g. `stage teacher` or `model_dir models/cnn`. */
export function describeTeacher(t: TeacherSpec): string {
  if ('stage' in t) return `stage ${t.stage}${t.seed !== undefined ? ` (seed ${t.seed})` : ''}`;
  if ('model_dir' in t) return `model_dir ${t.model_dir}`;
  return `checkpoint ${t.checkpoint}`;
}
