/**
 * Checks of a training job against its dataset, made in the launcher before any worker starts: what the schema
 * alone cannot know (the dataset's sample shape, classes and size). Each problem is one line of a ConfigError
 * naming the field to change.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { BatchPlan } from '../src/config/batch.ts';
import { ConfigError, type ConfigIssue } from '../src/config/errors.ts';
import { type JobStageRun, jobStageRunDir, jobStageRuns, teacherRun } from '../src/config/job-stages.ts';
import { fieldPosition } from '../src/config/load.ts';
import { checkpointDirOf } from '../src/config/outputs.ts';
import { type JobBase, ModelSpec, type ParsedJob } from '../src/config/schema.ts';
import type { TeacherSpec } from '../src/config/teachers.ts';
import { datasetInfo } from '../src/data/dataset-info.ts';
import { DistributedSampler } from '../src/data/sampler.ts';
import { checkpointsHeld, readCheckpointHeader, resolveCheckpoint } from '../src/engine/checkpoint.ts';
import { buildNet } from '../src/models/build.ts';
import { KD_MODEL_JSON } from '../src/models/net-dir.ts';
import { MODEL_JSON } from '../src/models/save.ts';
import { isSearchable, smallestCandidate } from '../src/models/search-space.ts';
import { cnnBlockShapes, modelInputShape, modelOutputSize } from '../src/models/shapes.ts';
import { readTfjsModel, TfjsModelError } from '../src/models/tfjs-dir.ts';
import { zooAdaptor } from '../src/trainer/build-objective.ts';
import { type ResumeSource, resumeSource, runBatch } from '../src/trainer/checkpoints.ts';
import { pipelineIssues } from './pipeline-plan.ts';

const dims = (shape: readonly number[]) => shape.join('×');
const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

type Issue = Omit<ConfigIssue, 'line'>;

function fail(file: string | undefined, issues: readonly Issue[]): never {
  throw new ConfigError(
    file ?? '<job>',
    issues.map((i) => ({ ...i, ...fieldPosition(file, i.path) })),
  );
}

/**
 * The batch plan of a training job for `world` data-parallel ranks, after checking it against its dataset and its
 * teachers; for a staged job every stage is checked and the first stage's plan returned (each stage's is resolved
 * again in the workers). Throws a ConfigError naming the fields, before any worker starts.
 */
export function checkTraining(
  job: ParsedJob,
  world: number,
  file: string | undefined,
  { jobDir, runDir }: { jobDir: string; runDir: string },
): BatchPlan {
  checkResumePath(job, file, jobDir);
  if (job.stages === undefined) {
    const dir = checkpointDirOf(job, jobDir, runDir);
    const { batch, source } = runBatch(job, world, dir, jobDir, file);
    checkTrainingJob(job, batch, file, { jobDir, resumed: source });
    checkNotOverCheckpoints(job, dir, file, 'checkpoint.dir');
    return batch;
  }
  // A staged job's own model is its stages' default: the plan is built from it even where every stage has another.
  if (job.model) checkModelDir(job.model, file, 'model.path');
  const runs = jobStageRuns(job);
  const dirOf = (run: JobStageRun) => {
    const dir = checkpointDirOf(run.job, jobDir, runDir);
    return dir && join(dir, jobStageRunDir(run));
  };
  for (const run of runs) checkNotOverCheckpoints(run.job, dirOf(run), file, 'checkpoint.dir');
  let first: BatchPlan | undefined;
  for (const run of runs) {
    if (run.seedIndex !== undefined && run.seedIndex > 0) continue;
    const stage = job.stages[run.index];
    const own = (key: string) => (stage as Record<string, unknown>)[key] !== undefined;
    const pathOf = (path: string) => (own(path.split('.')[0]) ? `stages.${run.index}.${path}` : path);
    let planned: ReturnType<typeof runBatch>;
    try {
      planned = runBatch(run.job, world, dirOf(run), jobDir, file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      fail(
        file,
        err.issues.map((i) => ({ path: pathOf(i.path), message: `stage '${run.stage}': ${i.message}` })),
      );
    }
    const { batch, source } = planned;
    first ??= batch;
    const refused = pipelineIssues(run.job);
    if (refused.length > 0)
      fail(
        file,
        refused.map((i) => ({ path: pathOf(i.path), message: `stage '${run.stage}': ${i.message}` })),
      );
    checkTrainingJob(run.job, batch, file, {
      jobDir,
      resumed: source,
      pathOf,
      stage: run.stage,
      stageModel: (t) => teacherRun(runs, t)?.job.model,
    });
  }
  if (!first) throw new Error('a staged job without stages');
  return first;
}

/** `resume: PATH` names a checkpoint that must be there: found missing only once the workers load it is too late. */
function checkResumePath(job: ParsedJob, file: string | undefined, jobDir: string): void {
  if (job.resume === undefined || job.resume === 'auto' || job.resume === 'never') return;
  try {
    readCheckpointHeader(resolveCheckpoint(resolve(jobDir, job.resume)));
  } catch (err) {
    fail(file, [{ path: 'resume', message: (err as Error).message }]);
  }
}

/**
 * Whether a single-model job has nothing left to train: it resumes from a checkpoint at (or past) its last step.
 * Returns that checkpoint's step directory and step, or undefined.
 */
export function finishedAt(
  job: ParsedJob,
  { jobDir, runDir }: { jobDir: string; runDir: string },
): { checkpoint: string; step: number; totalSteps: number } | undefined {
  if (job.stages !== undefined) return undefined;
  const dir = checkpointDirOf(job, jobDir, runDir);
  const source = resumeSource(job, dir, jobDir);
  if (!source) return undefined;
  const totalSteps = job.steps ?? (job.epochs ?? 1) * source.stepsPerEpoch;
  return source.step >= totalSteps
    ? { checkpoint: source.stepDir, step: source.step, totalSteps }
    : undefined;
}

/**
 * Nothing retrains from step 0 over existing checkpoints unless asked: without `resume`, a checkpoint directory
 * that already holds step directories is refused before any worker starts.
 */
function checkNotOverCheckpoints(
  job: JobBase,
  dir: string | undefined,
  file: string | undefined,
  path: string,
): void {
  if (job.resume !== undefined || dir === undefined) return;
  const held = checkpointsHeld(dir);
  if (held) fail(file, [{ path, message: held }]);
}

interface CheckContext {
  readonly jobDir: string;
  /** The checkpoint the run resumes from, when it does. */
  readonly resumed?: ResumeSource;
  /** Where a field of this (stage's) job is in the file: `stages.N.<field>` when the stage gives it. */
  readonly pathOf?: (path: string) => string;
  /** The stage being checked, for messages. */
  readonly stage?: string;
  /** The model spec of a `{stage: NAME}` teacher. */
  readonly stageModel?: (t: Extract<TeacherSpec, { stage: string }>) => ModelSpec | undefined;
}

/** Throws a ConfigError listing every mismatch between the job's model, batch sizes, dataset and teachers. */
export function checkTrainingJob(
  job: JobBase,
  batch: BatchPlan,
  file: string | undefined,
  context: CheckContext = { jobDir: process.cwd() },
): void {
  const { model, data } = job;
  if (!model || !data) return; // the schema already demands them of a training job
  const ds = datasetInfo(data, context.jobDir);
  const source =
    data.dataset === 'file' || data.dataset === 'images' || data.dataset === 'npy'
      ? (data.path ?? data.train)
      : undefined;
  // A pair of .npy files is named by its samples' file.
  const name = source === undefined ? data.dataset : typeof source === 'string' ? source : source.x;
  const issues: Issue[] = [];
  checkModelDir(model, file, context.pathOf?.('model.path') ?? 'model.path');

  switch (model.type) {
    case 'tfjs':
    case 'module': {
      const shape = modelInputShape(model);
      if (product(shape) !== ds.features) {
        issues.push({
          path: model.type === 'tfjs' ? 'model.path' : 'model.export',
          message: `the model takes ${dims(shape)} = ${product(shape)} values per sample but ${name} samples have ${ds.features}`,
        });
      }
      break;
    }
    case 'mlp': {
      const first = model.layers[0];
      if (first !== ds.features) {
        issues.push({
          path: 'model.layers',
          message: `the MLP takes ${first} inputs but ${name} samples have ${ds.features} values (${dims(ds.sampleShape)}): make the first size ${ds.features}`,
        });
      }
      break;
    }
    case 'cnn': {
      const values = product(model.input);
      if (values !== ds.features) {
        issues.push({
          path: 'model.input',
          message: `the CNN takes ${dims(model.input)} = ${values} values per sample but ${name} samples have ${ds.features}: use [${ds.sampleShape.join(', ')}]`,
        });
      }
      const shapes = cnnBlockShapes(model);
      const collapsed = shapes.findIndex(([h, w]) => h < 1 || w < 1);
      if (collapsed >= 0) {
        issues.push({
          path: `model.conv.${collapsed}`,
          message: `conv block ${collapsed} leaves no pixels of the ${dims(model.input)} input (after it: ${dims(shapes[collapsed])}): fewer blocks, smaller strides or pools`,
        });
      }
      break;
    }
    case 'transformer': {
      if (model.seq_len !== ds.features) {
        issues.push({
          path: 'model.seq_len',
          message: `the Transformer takes ${model.seq_len} tokens but ${name} samples have ${ds.features}: make seq_len ${ds.features}`,
        });
      }
      if (ds.vocab === undefined) {
        issues.push({
          path: 'model.type',
          message: `${name} samples are not token ids: a Transformer needs a sequence task (seqcls)`,
        });
      } else if (model.vocab < ds.vocab) {
        issues.push({
          path: 'model.vocab',
          message: `the Transformer embeds ${model.vocab} token ids but ${name} uses ${ds.vocab}: make vocab ≥ ${ds.vocab}`,
        });
      }
      break;
    }
  }

  const outputs = modelOutputSize(model);
  if (outputs !== ds.classes) {
    const [path, what] =
      model.type === 'mlp'
        ? ['model.layers', 'the last size']
        : model.type === 'tfjs'
          ? ['model.path', "the last layer's units"]
          : model.type === 'module'
            ? ['model.export', "the Net's outputs"]
            : ['model.classes', 'model.classes'];
    issues.push({
      path,
      message: `the model has ${outputs} outputs but ${name} has ${ds.classes} classes: make ${what} ${ds.classes}`,
    });
  }

  if (batch.trainBatchSize > ds.trainSize) {
    const field = job.train_batch_size !== undefined ? 'train_batch_size' : 'train_micro_batch_size_per_gpu';
    issues.push({
      path: field,
      message: `train_batch_size ${batch.trainBatchSize} (train_micro_batch_size_per_gpu ${batch.microBatch} × gradient_accumulation_steps ${batch.accumulation} × data-parallel size ${batch.dataParallel}) is larger than the ${ds.trainSize} samples of ${name}'s training set`,
    });
  }

  const epoch = context.resumed && epochIssue(context.resumed, batch, ds.trainSize, data.drop_last);
  if (epoch) issues.push(epoch);

  if (job.search && isSearchable(model)) {
    const { search } = job;
    const smallest = smallestCandidate(model, search.space);
    if (smallest.parameters > search.max_parameters) {
      issues.push({
        path: 'search.max_parameters',
        message: `no candidate of the search space has at most ${search.max_parameters} parameters: the smallest, ${smallest.name}, has ${smallest.parameters}`,
      });
    }
    // The trials train on what the held-out share leaves (splitByFraction's count).
    const left = ds.trainSize - Math.round(ds.trainSize * search.validation_fraction);
    if (batch.trainBatchSize > left) {
      issues.push({
        path: 'search.validation_fraction',
        message: `validation_fraction ${search.validation_fraction} leaves the trials ${left} training samples, fewer than train_batch_size ${batch.trainBatchSize}`,
      });
    }
  }

  const teachers = teacherIssues(job, model, context);
  issues.push(...teachers.issues, ...matchIssues(job, model, teachers.specs));

  const pathOf = context.pathOf ?? ((p: string) => p);
  const where = context.stage !== undefined ? `stage '${context.stage}': ` : '';
  if (issues.length > 0) {
    fail(
      file,
      issues.map((i) => ({ path: pathOf(i.path), message: `${where}${i.message}` })),
    );
  }
}

/**
 * A resumed run continues the checkpoint's data order only with as many steps per epoch (the sampler's position is
 * the step modulo them). The same global batch gives the same number at any world size, except where
 * `data.drop_last: false` pads the epoch to a multiple of the data-parallel size and the padding completes a step.
 */
function epochIssue(
  source: ResumeSource,
  batch: BatchPlan,
  trainSize: number,
  dropLast: boolean,
): Issue | undefined {
  const { dataParallel: dp } = batch;
  const sampler = new DistributedSampler({ length: trainSize, world: dp, rank: 0, dropLast });
  const steps = sampler.steps(batch.microBatch * batch.accumulation);
  if (steps === source.stepsPerEpoch) return undefined;
  const padded = dropLast ? '' : ` (data.drop_last: false pads them to ${sampler.totalSize})`;
  return {
    path: 'resume',
    message: `resuming ${source.from.name}, written with ${source.stepsPerEpoch} steps per epoch: at data-parallel size ${dp} the ${trainSize} training samples${padded} make ${steps} steps of ${batch.trainBatchSize}; the data order would not continue`,
  };
}

/** A model directory of the user's own that kd-launch cannot read or run, refused naming its field. */
function checkModelDir(model: ModelSpec, file: string | undefined, path: string): void {
  if (model.type !== 'tfjs') return;
  try {
    // Reading it refuses a layer kd-launch cannot run; one sample through it, a configuration it cannot.
    readTfjsModel(model.path);
    modelOutputSize(model);
  } catch (err) {
    if (!(err instanceof TfjsModelError)) throw err;
    fail(file, [{ path, message: `${model.path}: ${err.message}` }]);
  }
}

/** The model spec in a model directory's kd-model.json, read without its weights; undefined when unreadable. */
export function modelDirSpec(dir: string): ModelSpec | undefined {
  try {
    const raw = JSON.parse(readFileSync(join(dir, KD_MODEL_JSON), 'utf8')) as { model?: unknown };
    const parsed = ModelSpec.safeParse(raw.model);
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Teachers that cannot be found, or that read other samples or score other classes than the student. */
function teacherIssues(
  job: JobBase,
  student: ModelSpec,
  context: CheckContext,
): { issues: Issue[]; specs: (ModelSpec | undefined)[] } {
  const issues: Issue[] = [];
  // Undefined where the teacher's model is not known here (refused, or a checkpoint's).
  const specs: (ModelSpec | undefined)[] = (job.teachers ?? []).map(() => undefined);
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  (job.teachers ?? []).forEach((t, j) => {
    if (t.task !== undefined) {
      issues.push({
        path: `teachers.${j}.task`,
        message: `the ${job.data?.dataset} data set has one task: multi-task distillation needs task-tagged batches`,
      });
    }
    let spec: ModelSpec | undefined;
    if ('model_dir' in t) {
      const dir = resolve(context.jobDir, t.model_dir);
      if (!existsSync(join(dir, KD_MODEL_JSON)) && !existsSync(join(dir, MODEL_JSON))) {
        issues.push({
          path: `teachers.${j}.model_dir`,
          message: `no kd-launch model at ${dir} (neither ${KD_MODEL_JSON}, which a training job's output_dir writes, nor a tfjs ${MODEL_JSON})`,
        });
        return;
      }
      if (!existsSync(join(dir, KD_MODEL_JSON))) {
        try {
          readTfjsModel(dir);
        } catch (err) {
          if (!(err instanceof TfjsModelError)) throw err;
          issues.push({ path: `teachers.${j}.model_dir`, message: `${dir}: ${err.message}` });
          return;
        }
        spec = { type: 'tfjs', path: dir };
      } else spec = modelDirSpec(dir);
      if (spec?.type === 'module') {
        // A process builds the Nets of its job's own modules only (buildModels), and this one is another job's.
        issues.push({
          path: `teachers.${j}.model_dir`,
          message: `${dir} holds a Net built in code (${spec.module}), which teaches in the job that trained it only (a {stage: NAME} teacher)`,
        });
        return;
      }
    } else if ('stage' in t) {
      spec = context.stageModel?.(t);
    }
    if (spec === undefined) return; // a checkpoint's model is known only once it is read
    specs[j] = spec;
    if (modelOutputSize(spec) !== modelOutputSize(student)) {
      issues.push({
        path: `teachers.${j}`,
        message: `the teacher (${spec.type}) has ${modelOutputSize(spec)} outputs, the student ${modelOutputSize(student)}`,
      });
    }
    if (size(modelInputShape(spec)) !== size(modelInputShape(student))) {
      issues.push({
        path: `teachers.${j}`,
        message: `the teacher (${spec.type}) takes [${modelInputShape(spec).join(', ')}] per sample, the student [${modelInputShape(student).join(', ')}]`,
      });
    }
  });
  return { issues, specs };
}

/**
 * Intermediate matches naming a layer the student (layer_S) or the one teacher (layer_T) does not have, by number
 * or by name, found as the workers' adaptors would find them. A model known only once a worker reads it (a
 * checkpoint's, or a Net built in another process) is checked there.
 */
function matchIssues(
  job: JobBase,
  student: ModelSpec,
  teachers: readonly (ModelSpec | undefined)[],
): Issue[] {
  const matches = job.distillation?.intermediate_matches ?? [];
  if (matches.length === 0) return [];
  const adaptorOf = (spec: ModelSpec | undefined) => {
    if (spec === undefined) return undefined;
    try {
      return zooAdaptor(buildNet(spec));
    } catch {
      return undefined;
    }
  };
  const sides = [
    { key: 'layer_S' as const, who: 'the student', adaptor: adaptorOf(student) },
    // Matches read the batch's one teacher (multi_teacher refuses them): each teacher must have the layers.
    ...teachers.map((spec, j) => ({
      key: 'layer_T' as const,
      who: `teacher ${j}`,
      adaptor: adaptorOf(spec),
    })),
  ];
  const issues: Issue[] = [];
  matches.forEach((m, i) => {
    for (const { key, who, adaptor } of sides) {
      const refs = Array.isArray(m[key]) ? m[key] : [m[key]];
      for (const layer of refs) {
        try {
          adaptor?.taps(m.feature, layer);
        } catch (err) {
          if (!(err instanceof RangeError)) throw err;
          issues.push({
            path: `distillation.intermediate_matches.${i}.${key}`,
            message: `${who}: ${err.message}`,
          });
        }
      }
    }
  });
  return issues;
}
