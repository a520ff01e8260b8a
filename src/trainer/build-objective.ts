/**
 * The training job's objective: cross-entropy, or distillation from the job's `teachers:`. Teachers are loaded
 * as Nets with fixed weights and run in inference mode in the objective's `prepare`, on every data-parallel
 * rank's own micro-batch; with `is_caching_logits`, rank 0 runs each teacher once over the training set into a
 * cache file and every rank reads its rows from there instead.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tf } from '../backend/tf.ts';
import type { JobBase } from '../config/schema.ts';
import { ModelSpec } from '../config/schema.ts';
import { describeTeacher, type TeacherSpec } from '../config/teachers.ts';
import { gatherBatch, type LabeledSet } from '../data/labeled-set.ts';
import { consolidate, readAllRanks, resolveCheckpoint } from '../engine/checkpoint.ts';
import { type Net, netParams } from '../engine/net.ts';
import { buildNet } from '../models/build.ts';
import { loadNetModel, type NetModel } from '../models/net-dir.ts';
import { CrossEntropy } from '../objectives/cross-entropy.ts';
import {
  type Adaptor,
  blockTapAdaptor,
  CachedTeacher,
  cacheTeacherLogits,
  type DistillationMode,
  DistillationObjective,
  LiveTeacher,
  NetTeacher,
  type Teacher,
  type TeacherSource,
  tapAdaptor,
} from '../objectives/distill/index.ts';
import type { Objective } from '../objectives/objective.ts';
import type { WorkerContext } from './context.ts';

/**
 * Where a zoo model's features are, by TextBrewer's numbering where it has one: a Transformer's hidden layer 0 is
 * its embeddings and hidden layer i its i-th encoder layer, attention layer i its i-th encoder layer; an MLP's or
 * CNN's layer i is its block i.
 */
export function zooAdaptor(net: Net): Adaptor {
  if (net.kind !== 'transformer') return blockTapAdaptor(net);
  const layers = net.blocks.map((b) => b.name).filter((n) => /^layer\d+$/.test(n));
  return tapAdaptor(
    {
      hidden: ['embeddings/hidden', ...layers.map((l) => `${l}/hidden`)],
      attention: layers.map((l) => `${l}/attention`),
    },
    'transformer',
  );
}

/**
 * A teacher fed the student's micro-batch: the same samples, reshaped to the teacher's input (a CNN teacher of
 * an MLP student sees [n, 28, 28, 1] where the student sees [n, 784]).
 */
class ReshapingTeacher implements Teacher {
  constructor(
    readonly inner: NetTeacher,
    readonly inputShape: readonly number[],
  ) {}

  run(inputs: tf.Tensor) {
    return this.inner.run(tf.reshape(inputs, [inputs.shape[0], ...this.inputShape]));
  }
}

/** How the job finds a teacher's files. */
export interface TeacherPaths {
  /** Directory relative paths of the job file resolve against. */
  readonly jobDir: string;
  /** The model directory of an earlier stage's run (`{stage: NAME}` teachers). */
  readonly stageModelDir?: (t: Extract<TeacherSpec, { stage: string }>) => string;
  /** Where cached teacher logits are written (`is_caching_logits`). */
  readonly cacheDir: string;
}

/** A teacher's model: from a model directory, an earlier stage's output, or a checkpoint's parameters. */
export function loadTeacherModel(t: TeacherSpec, paths: TeacherPaths): NetModel {
  if ('model_dir' in t) return loadNetModel(resolve(paths.jobDir, t.model_dir));
  if ('stage' in t) {
    if (!paths.stageModelDir) throw new Error(`${describeTeacher(t)}: this job has no stages`);
    return loadNetModel(paths.stageModelDir(t));
  }
  const stepDir = resolveCheckpoint(resolve(paths.jobDir, t.checkpoint));
  const state = consolidate(readAllRanks(stepDir));
  const parsed = ModelSpec.safeParse(state.meta['model']);
  if (!parsed.success)
    throw new Error(`checkpoint ${stepDir} has no model spec: not written by a training job`);
  const net = buildNet(parsed.data);
  // The objective's own parameters (projections) follow the net's in the flat space: the model is the prefix.
  const values = netParams(net).map((p, i) => {
    const slot = state.slots[i];
    if (!slot || slot.shape.join('x') !== p.shape.join('x')) {
      throw new Error(`checkpoint ${stepDir}: its tensors do not match the model its header describes`);
    }
    return state.params.slice(slot.offset, slot.offset + slot.size);
  });
  return { spec: parsed.data, net, values };
}

export interface BuiltObjective {
  readonly objective: Objective;
  /** One line per teacher for the log, e.g. `stage teacher: cnn, 206922 parameters, live`. */
  readonly teachers: readonly string[];
  dispose(): void;
}

export interface ObjectiveOptions {
  readonly ctx: WorkerContext;
  readonly job: JobBase;
  readonly student: { readonly spec: ModelSpec; readonly net: Net };
  readonly totalSteps: number;
  readonly train: LabeledSet;
  readonly paths: TeacherPaths;
  /** Distinguishes this run's cache files from other runs' (a stage and seed). */
  readonly runKey: string;
}

/** The objective a job's `distillation:` and `teachers:` describe (cross-entropy without them). */
export async function buildObjective(o: ObjectiveOptions): Promise<BuiltObjective> {
  const { job, ctx } = o;
  const spec = job.distillation;
  if (spec === undefined) return { objective: new CrossEntropy(), teachers: [], dispose: () => {} };
  const teacherSpecs = job.teachers ?? [];
  if (teacherSpecs.length === 0) throw new Error('distillation needs teachers (the job has none)');
  const nets: NetTeacher[] = [];
  const sources: TeacherSource[] = [];
  const lines: string[] = [];
  const tasks = teacherSpecs.every((t) => t.task !== undefined);
  const ordered = tasks ? [...teacherSpecs].sort((a, b) => (a.task ?? 0) - (b.task ?? 0)) : teacherSpecs;
  try {
    for (const [j, t] of ordered.entries()) {
      const model = loadTeacherModel(t, o.paths);
      checkCompatible(t, model, o.student.net);
      const inner = new NetTeacher(model.net, model.values);
      nets.push(inner);
      const teacher = new ReshapingTeacher(inner, model.net.inputShape);
      const adaptor = zooAdaptor(model.net);
      const parameters = model.values.reduce((n, v) => n + v.length, 0);
      if (!spec.is_caching_logits) {
        sources.push(new LiveTeacher(teacher, adaptor));
        lines.push(`${describeTeacher(t)}: ${model.spec.type}, ${parameters} parameters, live`);
        continue;
      }
      mkdirSync(o.paths.cacheDir, { recursive: true });
      const path = join(o.paths.cacheDir, `${o.runKey}-teacher-${j}.kdtl`);
      if (ctx.rank === 0) {
        const t0 = performance.now();
        const shape = [...model.net.inputShape];
        await cacheTeacherLogits(
          path,
          teacher,
          adaptor,
          {
            count: o.train.length,
            inputs: (indices) => {
              const { inputs } = gatherBatch(o.train, indices, 0, indices.length);
              return tf.tensor(inputs, [indices.length, ...shape], model.net.inputDtype);
            },
          },
          { topK: spec.logits_cache?.top_k, dtype: spec.logits_cache?.dtype, batchSize: 256 },
        );
        ctx.log(
          `cached ${describeTeacher(t)}'s logits over ${o.train.length} samples in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${path}`,
        );
      }
      // Every rank reads the file rank 0 wrote: nobody opens it before it is renamed into place.
      await ctx.pg.barrier();
      sources.push(CachedTeacher.open(path));
      lines.push(`${describeTeacher(t)}: ${model.spec.type}, ${parameters} parameters, cached logits`);
    }
    const mode: DistillationMode = tasks ? 'multi_task' : sources.length > 1 ? 'multi_teacher' : 'general';
    const weights = ordered.some((t) => t.weight !== undefined)
      ? ordered.map((t) => t.weight ?? 1)
      : undefined;
    const objective = new DistillationObjective({
      spec,
      teachers: sources,
      student: zooAdaptor(o.student.net),
      totalSteps: o.totalSteps,
      mode,
      teacherWeights: mode === 'multi_teacher' ? weights : undefined,
    });
    // A cached teacher never runs again: its weights can go now.
    if (spec.is_caching_logits) for (const n of nets.splice(0)) n.dispose();
    return {
      objective,
      teachers: lines,
      dispose: () => {
        for (const n of nets) n.dispose();
      },
    };
  } catch (err) {
    for (const n of nets) n.dispose();
    throw err;
  }
}

/** A teacher must read the student's samples and score the same classes. */
function checkCompatible(t: TeacherSpec, teacher: NetModel, student: Net): void {
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  if (
    size(teacher.net.inputShape) !== size(student.inputShape) ||
    teacher.net.inputDtype !== student.inputDtype
  ) {
    throw new Error(
      `${describeTeacher(t)}: the teacher (${teacher.spec.type}) takes [${teacher.net.inputShape.join(', ')}] ${teacher.net.inputDtype} samples, the student [${student.inputShape.join(', ')}] ${student.inputDtype}`,
    );
  }
}
