/**
 * Multi-stage jobs: `stages:` lists named partial jobs run in order by the same workers, each merged over the
 * job's top-level keys (a key a stage gives replaces the top-level one whole; `steps` and `epochs` replace each
 * other). A stage's model goes to `<output_dir or the run directory>/<stage>[/seed-N]`, and a later stage can take it as a
 * teacher with `teachers: [{stage: NAME}]`, or train it further with `model: {stage: NAME}` (the same model,
 * starting from its trained weights: pruning or fine-tuning what an earlier stage distilled).
 *
 *   stages:
 *     - {name: teacher, model: {type: cnn, …}, epochs: 10}
 *     - {name: distilled, model: {type: mlp, …}, seeds: [1, 2, 3], teachers: [{stage: teacher}], distillation: {…}}
 *     - {name: scratch, model: {type: mlp, …}, seeds: [1, 2, 3], distillation: null, teachers: null}
 *     - {name: pruned, model: {stage: distilled}, seeds: [1, 2, 3], pruning: {sparsity: 0.9}}
 *
 * `distillation: null` and `teachers: null` turn off what the top level sets.
 */
import { z } from 'zod';
import { reducedSpec } from './layer-reduction.ts';
import type { JobBase, ModelSpec } from './schema.ts';
import type { TeacherSpec } from './teachers.ts';

/** Top-level keys a stage cannot change: they describe the processes, which every stage shares. */
export const JOB_ONLY_KEYS = ['name', 'backend', 'script', 'args', 'trace', 'stages'] as const;
/** Keys a stage may set to null to drop the top-level value. */
const NULLABLE_KEYS = new Set(['distillation', 'teachers']);

/**
 * A stage's `model: {stage: NAME}`: the model an earlier stage trained, its trained weights the starting point. A
 * run takes the run of that stage with `seed`, else the one with its own seed, else the stage's first.
 */
export const StageModelRef = z
  .strictObject({
    type: z.literal('stage').describe('`stage`; may be left out, as `stage` says which kind this is'),
    stage: z.string().min(1).describe('an earlier stage, whose trained model this stage starts from'),
    seed: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe(
        "which seed's model of that stage; default the run's own seed where it ran one, else its first",
      ),
    layers: z
      .array(z.number().int().min(0))
      .min(1, 'keep at least one layer, or leave layers out')
      .optional()
      .describe(
        "layer reduction (DeepSpeed's teacher_layer): keep only these layers of that model, in increasing order, counted from 0: a Transformer's encoder layers (its embeddings and head are kept), an MLP's hidden layers (its output layer is kept; sizes must chain)",
      ),
  })
  .meta({
    title: "stage: NAME (an earlier stage's model)",
    description:
      'The model an earlier stage trained, `model: {stage: distilled}`: the same model, its trained weights the starting point (prune, quantize or fine-tune what that stage made). With `layers`, a shallower model made of those of its layers (layer reduction: `model: {stage: teacher, layers: [1, 3]}`). Only in a stage.',
  });
export type StageModelRef = z.infer<typeof StageModelRef>;

/** A stage's `model`: a model spec, or an earlier stage's model. */
export type StageModel = ModelSpec | StageModelRef;

export function isStageModelRef(m: StageModel | null | undefined): m is StageModelRef {
  return m?.type === 'stage';
}

/** What a stage holds: its name, its seeds, and the job keys it overrides. */
export type JobStageOverrides = {
  [K in Exclude<keyof JobBase, (typeof JOB_ONLY_KEYS)[number] | 'model'>]?: JobBase[K] | null;
} & { model?: StageModel };
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
export function jobStageSchema(
  fields: Readonly<Record<string, z.ZodType>>,
  stageModel: z.ZodType<StageModel>,
): z.ZodType<JobStageSpec> {
  const overrides: Record<string, z.ZodType> = {};
  for (const [key, schema] of Object.entries(fields)) {
    if ((JOB_ONLY_KEYS as readonly string[]).includes(key)) continue;
    const unwrapped = schema instanceof z.ZodDefault ? (schema.unwrap() as z.ZodType) : schema;
    const bare = key === 'model' ? stageModel : unwrapped;
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
      description: `A multi-stage job's stages run in order by the same workers, each merged over the top-level keys: a key a stage gives replaces the top-level one whole (\`steps\` and \`epochs\` replace each other); ${JOB_ONLY_KEYS.filter((k) => k !== 'stages').join(', ')} are the job's alone. A stage's model goes to \`<output_dir or the run directory>/<stage>[/seed-N]\`, and a later stage takes it as a teacher with \`teachers: [{stage: NAME}]\`, or trains on from it with \`model: {stage: NAME}\` (the same model from its trained weights; with \`seed\`, that seed's, else the run's own seed's where that stage ran it, else its first).`,
      examples: [
        `stages:
  - {name: teacher, model: {type: cnn, …}, epochs: 10}
  - {name: distilled, model: {type: mlp, …}, seeds: [1, 2, 3], teachers: [{stage: teacher}], distillation: {…}}
  - {name: scratch, model: {type: mlp, …}, seeds: [1, 2, 3], distillation: null, teachers: null}
  - {name: pruned, model: {stage: distilled}, seeds: [1, 2, 3], pruning: {sparsity: 0.9}}`,
      ],
    }) as unknown as z.ZodType<JobStageSpec>;
}

/**
 * The job a stage runs: the top-level keys with the stage's over them. A `{stage: NAME}` model is that earlier
 * stage's model spec (its weights come in `JobStageRun.from`); one that names no earlier stage leaves the model
 * out, and `jobStageIssues` says why.
 */
export function mergeJobStage(job: JobWithStages, stage: JobStageSpec): JobBase {
  const merged: Record<string, unknown> = { ...job, stages: undefined };
  const given = Object.entries(stage).filter(([k, v]) => v !== undefined && k !== 'name' && k !== 'seeds');
  if (given.some(([k]) => k === 'steps' || k === 'epochs')) {
    merged['steps'] = undefined;
    merged['epochs'] = undefined;
  }
  for (const [k, v] of given) merged[k] = v === null ? undefined : v;
  if (isStageModelRef(stage.model)) merged['model'] = modelOfStage(job, stage, stage.model);
  merged['name'] = `${job.name}/${stage.name}`;
  return merged as JobBase;
}

/**
 * The model spec a `{stage: NAME}` model of `stage` means: the earlier stage's own, followed back to a spec, with
 * only the `layers` it keeps; undefined where that cannot be (`jobStageIssues` says why).
 */
function modelOfStage(job: JobWithStages, stage: JobStageSpec, ref: StageModelRef): ModelSpec | undefined {
  const source = sourceModel(job, stage, ref);
  if (!source || !ref.layers) return source;
  const reduced = reducedSpec(source, ref.layers);
  return 'spec' in reduced ? reduced.spec : undefined;
}

/** The whole model of the earlier stage a `{stage: NAME}` model names, before any layer reduction. */
function sourceModel(job: JobWithStages, stage: JobStageSpec, ref: StageModelRef): ModelSpec | undefined {
  const stages = job.stages ?? [];
  const at = stages.findIndex((s) => s.name === ref.stage);
  if (at < 0 || at >= stages.indexOf(stage)) return undefined;
  return mergeJobStage(job, stages[at]).model;
}

/** One training run of a stage: the stage, one of its seeds, and the merged job with that seed. */
export interface JobStageRun {
  readonly stage: string;
  readonly index: number;
  /** The seed's position in the stage's `seeds`, or undefined for a stage without `seeds`. */
  readonly seedIndex: number | undefined;
  readonly seed: number;
  readonly job: JobBase;
  /** A `{stage: NAME}` model: the earlier run whose trained model this run starts from, and its `layers`. */
  readonly from?: StartFrom<JobStageRun>;
}

/** Where a run's model starts: a trained model (a run, a directory), or only its `layers` (layer reduction). */
export interface StartFrom<T> {
  readonly model: T;
  readonly layers?: readonly number[];
}

/** Every run of a staged job, in order: each stage once per seed. */
export function jobStageRuns(job: JobWithStages): JobStageRun[] {
  const runs: JobStageRun[] = [];
  (job.stages ?? []).forEach((stage, index) => {
    const merged = mergeJobStage(job, stage);
    const seeded = stage.seeds?.map((seed, seedIndex) => ({ seedIndex, seed, job: { ...merged, seed } })) ?? [
      { seedIndex: undefined, seed: merged.seed, job: merged },
    ];
    for (const s of seeded) {
      const ref = isStageModelRef(stage.model) ? stage.model : undefined;
      const model = ref && modelRun(runs, ref, s.seed);
      const from = model && { model, ...(ref.layers ? { layers: ref.layers } : {}) };
      runs.push({ stage: stage.name, index, ...s, ...(from ? { from } : {}) });
    }
  });
  return runs;
}

/** The run a `{stage: NAME, seed?}` model means for a run with `seed`: the given seed's, its own, else the first. */
function modelRun(runs: readonly JobStageRun[], ref: StageModelRef, seed: number): JobStageRun | undefined {
  const ofStage = runs.filter((r) => r.stage === ref.stage);
  if (ref.seed !== undefined) return ofStage.find((r) => r.seed === ref.seed);
  return ofStage.find((r) => r.seed === seed) ?? ofStage[0];
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
      const path = own ? ['stages', i, 'teachers', j] : ['teachers', j];
      issues.push(...stageRefIssues(job, i, t, path, 'its teacher'));
    });
    if (isStageModelRef(stage.model)) issues.push(...modelRefIssues(job, i, stage.model));
  });
  return issues;
}

/** What is wrong with stage `i`'s `{stage: NAME, layers?}` model: the reference, then the layers it keeps. */
function modelRefIssues(job: JobWithStages, i: number, ref: StageModelRef): Issue[] {
  const path = ['stages', i, 'model'];
  const refIssues = stageRefIssues(job, i, ref, path, 'its model');
  if (refIssues.length > 0 || !ref.layers) return refIssues;
  const stages = job.stages ?? [];
  const stage = stages[i];
  const from = stages.find((s) => s.name === ref.stage);
  const at = [...path, 'layers'];
  // A search stage's model is the winner, whose layers the job file cannot know.
  if (from && mergeJobStage(job, from).search) {
    return [
      {
        path: at,
        message: `stage '${stage.name}' reduces stage '${ref.stage}', which searches: its layers are known only once it has run`,
      },
    ];
  }
  const source = sourceModel(job, stage, ref);
  const reduced = source && reducedSpec(source, ref.layers);
  return reduced && 'issue' in reduced
    ? [{ path: at, message: `stage '${stage.name}' reduces stage '${ref.stage}': ${reduced.issue}` }]
    : [];
}

/** What is wrong with stage `i`'s reference to another stage (a teacher, a model): it must be an earlier one. */
function stageRefIssues(
  job: JobWithStages,
  i: number,
  ref: { readonly stage: string; readonly seed?: number | undefined },
  path: (string | number)[],
  role: string,
): Issue[] {
  const stages = job.stages ?? [];
  const stage = stages[i];
  const at = stages.findIndex((s) => s.name === ref.stage);
  if (at < 0) {
    const names = stages.map((s) => s.name).join(', ');
    return [
      {
        path: [...path, 'stage'],
        message: `stage '${stage.name}': no stage named '${ref.stage}' (stages: ${names})`,
      },
    ];
  }
  if (at >= i) {
    return [
      {
        path: [...path, 'stage'],
        message: `stage '${stage.name}' (stage ${i}) takes stage '${ref.stage}' (stage ${at}) as ${role}: it must be an earlier stage`,
      },
    ];
  }
  if (
    ref.seed !== undefined &&
    !(stages[at].seeds ?? [mergeJobStage(job, stages[at]).seed]).includes(ref.seed)
  ) {
    return [{ path: [...path, 'seed'], message: `stage '${ref.stage}' has no run with seed ${ref.seed}` }];
  }
  return [];
}
