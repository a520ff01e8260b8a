/**
 * Multi-stage jobs: `stages:` lists named partial jobs run in order by the same workers, each merged over the
 * job's top-level keys (a key a stage gives replaces the top-level one whole; `steps` and `epochs` replace each
 * other). A stage's model goes to `<output_dir or the run directory>/<stage>[/seed-N]`, and a later stage can take it as a
 * teacher with `teachers: [{stage: NAME}]`.
 *
 *   stages:
 *     - {name: teacher, model: {type: cnn, …}, epochs: 10}
 *     - {name: distilled, model: {type: mlp, …}, seeds: [1, 2, 3], teachers: [{stage: teacher}], distillation: {…}}
 *     - {name: scratch, model: {type: mlp, …}, seeds: [1, 2, 3], distillation: null, teachers: null}
 *
 * `distillation: null` and `teachers: null` turn off what the top level sets.
 */
import { z } from 'zod';
import type { JobBase } from './schema.ts';
import type { TeacherSpec } from './teachers.ts';

/** Top-level keys a stage cannot change: they describe the processes, which every stage shares. */
export const JOB_ONLY_KEYS = ['name', 'backend', 'script', 'args', 'trace', 'stages'] as const;
/** Keys a stage may set to null to drop the top-level value. */
const NULLABLE_KEYS = new Set(['distillation', 'teachers']);

/** What a stage holds: its name, its seeds, and the job keys it overrides. */
export type JobStageOverrides = {
  [K in Exclude<keyof JobBase, (typeof JOB_ONLY_KEYS)[number]>]?: JobBase[K] | null;
};
export type JobStageSpec = JobStageOverrides & {
  readonly name: string;
  /** Runs the stage once per seed (the job `seed` of each run): figures become mean ± std. */
  readonly seeds?: readonly number[];
};

/** A job that may have stages (a `ParsedJob`). */
export type JobWithStages = JobBase & { readonly stages?: readonly JobStageSpec[] | undefined };

const stageName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a stage name is letters, digits, _ . - (it names a directory)')
  .describe("the stage's name: letters, digits, _ . - (it names the stage's model directory)");

/**
 * The schema of one stage from the job's own field schemas, defaults removed so that a key the stage leaves out
 * stays out (and the top-level value shows through).
 */
export function jobStageSchema(fields: Readonly<Record<string, z.ZodType>>): z.ZodType<JobStageSpec> {
  const overrides: Record<string, z.ZodType> = {};
  for (const [key, schema] of Object.entries(fields)) {
    if ((JOB_ONLY_KEYS as readonly string[]).includes(key)) continue;
    const bare = schema instanceof z.ZodDefault ? (schema.unwrap() as z.ZodType) : schema;
    const nullable = NULLABLE_KEYS.has(key);
    overrides[key] = (nullable ? bare.nullable().optional() : bare.optional()).meta({
      reference: key,
      description: `the top-level \`${key}\` for this stage${nullable ? '; null drops it' : ''}`,
    });
  }
  return z
    .strictObject({
      name: stageName,
      seeds: z
        .array(z.number().int().min(0))
        .min(1, 'give at least one seed, or leave seeds out')
        .refine((s) => new Set(s).size === s.length, 'seeds must differ')
        .optional()
        .describe(
          "runs the stage once per seed (the job's `seed` of each run): its figures become mean ± std",
        ),
      ...overrides,
    })
    .meta({
      description: `A multi-stage job's stages run in order by the same workers, each merged over the top-level keys: a key a stage gives replaces the top-level one whole (\`steps\` and \`epochs\` replace each other); ${JOB_ONLY_KEYS.filter((k) => k !== 'stages').join(', ')} are the job's alone. A stage's model goes to \`<output_dir or the run directory>/<stage>[/seed-N]\`, and a later stage takes it as a teacher with \`teachers: [{stage: NAME}]\`.`,
      examples: [
        `stages:
  - {name: teacher, model: {type: cnn, …}, epochs: 10}
  - {name: distilled, model: {type: mlp, …}, seeds: [1, 2, 3], teachers: [{stage: teacher}], distillation: {…}}
  - {name: scratch, model: {type: mlp, …}, seeds: [1, 2, 3], distillation: null, teachers: null}`,
      ],
    }) as unknown as z.ZodType<JobStageSpec>;
}

/** The job a stage runs: the top-level keys with the stage's over them. */
export function mergeJobStage(job: JobWithStages, stage: JobStageSpec): JobBase {
  const merged: Record<string, unknown> = { ...job, stages: undefined };
  const given = Object.entries(stage).filter(([k, v]) => v !== undefined && k !== 'name' && k !== 'seeds');
  if (given.some(([k]) => k === 'steps' || k === 'epochs')) {
    merged['steps'] = undefined;
    merged['epochs'] = undefined;
  }
  for (const [k, v] of given) merged[k] = v === null ? undefined : v;
  merged['name'] = `${job.name}/${stage.name}`;
  return merged as JobBase;
}

/** One training run of a stage: the stage, one of its seeds, and the merged job with that seed. */
export interface JobStageRun {
  readonly stage: string;
  readonly index: number;
  /** The seed's position in the stage's `seeds`, or undefined for a stage without `seeds`. */
  readonly seedIndex: number | undefined;
  readonly seed: number;
  readonly job: JobBase;
}

/** Every run of a staged job, in order: each stage once per seed. */
export function jobStageRuns(job: JobWithStages): JobStageRun[] {
  return (job.stages ?? []).flatMap((stage, index): JobStageRun[] => {
    const merged = mergeJobStage(job, stage);
    if (stage.seeds === undefined) {
      return [{ stage: stage.name, index, seedIndex: undefined, seed: merged.seed, job: merged }];
    }
    return stage.seeds.map((seed, seedIndex) => ({
      stage: stage.name,
      index,
      seedIndex,
      seed,
      job: { ...merged, seed },
    }));
  });
}

/** The directory of a stage run under the job's output root: `<stage>` or `<stage>/seed-N`. */
export function jobStageRunDir(run: Pick<JobStageRun, 'stage' | 'seedIndex' | 'seed'>): string {
  return run.seedIndex === undefined ? run.stage : `${run.stage}/seed-${run.seed}`;
}

/** The run of stage `name` a `{stage: name, seed?}` teacher means: the given seed's, or the stage's first. */
export function teacherRun(
  runs: readonly JobStageRun[],
  teacher: Extract<TeacherSpec, { stage: string }>,
): JobStageRun | undefined {
  const ofStage = runs.filter((r) => r.stage === teacher.stage);
  return teacher.seed === undefined ? ofStage[0] : ofStage.find((r) => r.seed === teacher.seed);
}

type Issue = { path: (string | number)[]; message: string };

/**
 * What the schema checks of a staged job beyond each stage's own shape: unique names, and teachers that name an
 * earlier stage (and one of its seeds). Issues name the field that is wrong, in the stage when the stage gave it.
 */
export function jobStageIssues(job: JobWithStages): Issue[] {
  const stages = job.stages ?? [];
  const issues: Issue[] = [];
  const seen = new Map<string, number>();
  stages.forEach((stage, i) => {
    const earlier = seen.get(stage.name);
    if (earlier !== undefined) {
      issues.push({
        path: ['stages', i, 'name'],
        message: `stage '${stage.name}' is already stage ${earlier}: stage names must differ`,
      });
    } else seen.set(stage.name, i);
  });
  stages.forEach((stage, i) => {
    const own = stage.teachers !== undefined;
    const teachers = own ? (stage.teachers ?? []) : (job.teachers ?? []);
    teachers.forEach((t, j) => {
      if (!('stage' in t)) return;
      const path = own ? ['stages', i, 'teachers', j, 'stage'] : ['teachers', j, 'stage'];
      const at = stages.findIndex((s) => s.name === t.stage);
      const names = stages.map((s) => s.name).join(', ');
      if (at < 0) {
        issues.push({
          path,
          message: `stage '${stage.name}': no stage named '${t.stage}' (stages: ${names})`,
        });
      } else if (at >= i) {
        issues.push({
          path,
          message: `stage '${stage.name}' (stage ${i}) takes stage '${t.stage}' (stage ${at}) as its teacher: a teacher must be an earlier stage`,
        });
      } else if (
        t.seed !== undefined &&
        !(stages[at].seeds ?? [mergeJobStage(job, stages[at]).seed]).includes(t.seed)
      ) {
        issues.push({
          path: own ? ['stages', i, 'teachers', j, 'seed'] : ['teachers', j, 'seed'],
          message: `stage '${t.stage}' has no run with seed ${t.seed}`,
        });
      }
    });
  });
  return issues;
}
