/**
 * Distillation as an Objective (TextBrewer's distillers, one class):
 *
 *   general        one teacher: soft labels + intermediate matches (GeneralDistiller; BasicDistiller without
 *                  matches; self-distillation is an earlier checkpoint as the teacher)
 *   multi_teacher  the teachers' logits averaged, or weighted, into one soft target (MultiTeacherDistiller)
 *   multi_task     teacher t for the batches of task t (`batch.task`) (MultiTaskDistiller)
 *
 * Teachers run (or are read from their cache) in `prepare`, outside the gradient tape: nothing in `loss` touches a
 * teacher's parameters, so no gradient can reach them. The projections of the matches are this objective's own
 * parameters, trained with the student.
 */
import { tf } from '../../backend/tf.ts';
import type { DistillationSpec, IntermediateMatchSpec } from '../../config/distillation.ts';
import type { NetOutput, ParamSpec } from '../../engine/net.ts';
import { softmaxCrossEntropy } from '../cross-entropy.ts';
import type { Objective, ObjectiveBatch, Prepared } from '../objective.ts';
import {
  attentionCeLoss,
  attentionMseLoss,
  cosLoss,
  type FeaturePair,
  fspLoss,
  hiddenMseLoss,
  kdCeLoss,
  kdMseLoss,
  mmdLoss,
  nstLoss,
  pkdLoss,
  probabilityShift,
} from './losses.ts';
import { applyProjection, initProjection, type ProjectionSpec, projectionParams } from './projection.ts';
import { scheduledWeight, temperatureFor } from './schedulers.ts';
import { type Adaptor, type FeatureRef, featureKey, type LayerRef, type TeacherSource } from './teacher.ts';

export type DistillationMode = 'general' | 'multi_teacher' | 'multi_task';

export interface DistillationOptions {
  /** The job's parsed `distillation:` section. */
  readonly spec: DistillationSpec;
  /** One teacher (general), the ensemble (multi_teacher), or teacher t for task t (multi_task). */
  readonly teachers: readonly TeacherSource[];
  /** How the student's logits and features are read; usually `blockTapAdaptor(studentNet)`. */
  readonly student: Adaptor;
  /** The job's optimizer steps, for the weight schedulers. */
  readonly totalSteps: number;
  /** Default: general for one teacher; several teachers need it said. */
  readonly mode?: DistillationMode;
  /** multi_teacher: each teacher's weight in the soft target (normalised to sum 1); default equal. */
  readonly teacherWeights?: readonly number[];
}

/** A match resolved: its loss function's arity, the layer refs it reads, and its projection's param slots. */
interface Match {
  readonly spec: IntermediateMatchSpec;
  readonly layersS: readonly LayerRef[];
  readonly layersT: readonly LayerRef[];
  readonly proj?: { readonly spec: ProjectionSpec; readonly at: number };
}

const asLayers = (ref: LayerRef | readonly [LayerRef, LayerRef]): LayerRef[] =>
  Array.isArray(ref) ? [...ref] : [ref as LayerRef];

export class DistillationObjective implements Objective {
  readonly name = 'distillation';
  readonly params: readonly ParamSpec[];
  readonly taps: readonly string[];
  readonly mode: DistillationMode;
  readonly #spec: DistillationSpec;
  readonly #teachers: readonly TeacherSource[];
  readonly #student: Adaptor;
  readonly #totalSteps: number;
  readonly #weights: readonly number[];
  readonly #matches: readonly Match[];
  readonly #teacherFeatures: readonly FeatureRef[];

  constructor(options: DistillationOptions) {
    const { spec, teachers, student } = options;
    const mode = options.mode ?? 'general';
    if (teachers.length === 0) throw new Error('distillation needs at least one teacher');
    if (mode === 'general' && teachers.length !== 1) {
      throw new Error(`general distillation takes one teacher, ${teachers.length} given (multi_teacher?)`);
    }
    if (mode === 'multi_teacher' && spec.intermediate_matches.length > 0) {
      throw new Error(
        'intermediate_matches need one teacher per batch: use general or multi_task, not multi_teacher',
      );
    }
    const weights = options.teacherWeights ?? teachers.map(() => 1);
    if (weights.length !== teachers.length || weights.some((w) => !(w >= 0)) || !(sum(weights) > 0)) {
      throw new RangeError(`teacherWeights: one weight ≥ 0 per teacher (${teachers.length}), not all 0`);
    }
    this.mode = mode;
    this.#spec = spec;
    this.#teachers = teachers;
    this.#student = student;
    this.#totalSteps = options.totalSteps;
    this.#weights = weights.map((w) => w / sum(weights));

    const params: ParamSpec[] = [];
    this.#matches = spec.intermediate_matches.map((m, i) => {
      const match: Match = { spec: m, layersS: asLayers(m.layer_S), layersT: asLayers(m.layer_T) };
      if (m.proj === undefined) return match;
      const proj = { kind: m.proj[0], dimS: m.proj[1], dimT: m.proj[2] };
      const at = params.length;
      params.push(...projectionParams(`proj${i}`, proj));
      return { ...match, proj: { spec: proj, at } };
    });
    this.params = params;
    // Asking the student's adaptor now also checks every layer_S exists before any step runs.
    this.taps = unique(
      this.#matches.flatMap((m) => m.layersS.flatMap((l) => student.taps(m.spec.feature, l))),
    );
    this.#teacherFeatures = uniqueBy(
      this.#matches.flatMap((m) => m.layersT.map((layer) => ({ feature: m.spec.feature, layer }))),
      featureKey,
    );
    // Checks the scheduler can run (it needs the job's length) before the first step.
    for (const s of [spec.kd_loss_weight_scheduler, spec.hard_label_weight_scheduler]) {
      scheduledWeight(s, 1, 0, this.#totalSteps);
    }
  }

  initParams(seed: number): Float32Array[] {
    return this.#matches.flatMap((m, i) => (m.proj ? initProjection(seed, i, m.proj.spec) : []));
  }

  async prepare(batch: ObjectiveBatch): Promise<Prepared> {
    const features = this.#teacherFeatures;
    if (this.mode === 'multi_task') {
      const task = batch.task;
      const teacher = task === undefined ? undefined : this.#teachers[task];
      if (teacher === undefined) {
        throw new RangeError(
          `multi_task distillation: batch task ${task} has no teacher (${this.#teachers.length})`,
        );
      }
      return this.#withMask(batch, teacher.outputs(batch.inputs, batch.indices, features));
    }
    if (this.mode === 'general') {
      return this.#withMask(batch, this.#teachers[0].outputs(batch.inputs, batch.indices, features));
    }
    const logits = tf.tidy(() => {
      let acc: tf.Tensor | undefined;
      this.#teachers.forEach((teacher, i) => {
        const term = tf.mul(teacher.outputs(batch.inputs, batch.indices, []).logits, this.#weights[i]);
        acc = acc === undefined ? term : tf.add(acc, term);
      });
      return acc as tf.Tensor;
    });
    return this.#withMask(batch, { logits });
  }

  #withMask(batch: ObjectiveBatch, outputs: Readonly<Record<string, tf.Tensor>>): Prepared {
    const adaptor = this.#student;
    const mask = adaptor.mask === undefined ? undefined : tf.tidy(() => adaptor.mask?.(batch.inputs));
    return mask === undefined ? outputs : { ...outputs, mask };
  }

  loss(
    student: NetOutput,
    params: readonly tf.Tensor[],
    batch: ObjectiveBatch,
    prepared: Prepared,
  ): tf.Scalar {
    const spec = this.#spec;
    return tf.tidy(() => {
      const terms: tf.Tensor[] = [];
      const logitsS = this.#student.logits(student);
      let logitsT = need(prepared, 'logits');
      if (spec.probability_shift) logitsT = probabilityShift(logitsT, batch.labels);

      const kdWeight = scheduledWeight(
        spec.kd_loss_weight_scheduler,
        spec.kd_loss_weight,
        batch.step,
        this.#totalSteps,
      );
      // A term whose scheduled weight is 0 at this step is still computed (times 0), so that the loss stays
      // connected to the student and the gradient is zero rather than missing.
      if (spec.kd_loss_weight > 0) {
        const tau = temperatureFor(spec.temperature_scheduler, spec.temperature, logitsS, logitsT);
        const kd =
          spec.kd_loss_type === 'ce' ? kdCeLoss(logitsS, logitsT, tau) : kdMseLoss(logitsS, logitsT, tau);
        terms.push(tf.mul(kd, kdWeight));
      }
      const hardWeight = scheduledWeight(
        spec.hard_label_weight_scheduler,
        spec.hard_label_weight,
        batch.step,
        this.#totalSteps,
      );
      if (spec.hard_label_weight > 0)
        terms.push(tf.mul(softmaxCrossEntropy(logitsS, batch.labels), hardWeight));

      const mask = prepared.mask;
      for (const m of this.#matches) {
        if (m.spec.weight === 0) continue;
        const project = (x: tf.Tensor) =>
          m.proj ? applyProjection(m.proj.spec.kind, params[m.proj.at], params[m.proj.at + 1], x) : x;
        const read = (layer: LayerRef) =>
          project(
            m.spec.feature === 'hidden'
              ? this.#student.hidden(student, layer)
              : this.#student.attention(student, layer),
          );
        const fs = m.layersS.map(read);
        const ft = m.layersT.map((layer) => need(prepared, featureKey({ feature: m.spec.feature, layer })));
        terms.push(tf.mul(matchLoss(m.spec.loss, fs, ft, mask), m.spec.weight));
      }
      if (terms.length === 0) return tf.mul(tf.sum(logitsS), 0) as tf.Scalar;
      return (terms.length === 1 ? terms[0] : tf.addN(terms)) as tf.Scalar;
    });
  }
}

function matchLoss(
  loss: IntermediateMatchSpec['loss'],
  s: readonly tf.Tensor[],
  t: readonly tf.Tensor[],
  mask: tf.Tensor | undefined,
): tf.Scalar {
  const pair = (x: readonly tf.Tensor[]): FeaturePair => [x[0], x[1]];
  switch (loss) {
    case 'hidden_mse':
      return hiddenMseLoss(s[0], t[0], mask);
    case 'cos':
      return cosLoss(s[0], t[0], mask);
    case 'pkd':
      return pkdLoss(s[0], t[0]);
    case 'attention_mse':
      return attentionMseLoss(s[0], t[0], mask);
    case 'attention_ce':
      return attentionCeLoss(s[0], t[0], mask);
    case 'fsp':
      return fspLoss(pair(s), pair(t), mask);
    case 'nst':
      return nstLoss(pair(s), pair(t), mask);
    case 'mmd':
      return mmdLoss(pair(s), pair(t), mask);
  }
}

function need(prepared: Prepared, key: string): tf.Tensor {
  const t = prepared[key];
  if (t === undefined) throw new Error(`distillation: the teacher's outputs lack '${key}'`);
  return t;
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

function uniqueBy<T>(xs: readonly T[], key: (x: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const x of xs) if (!seen.has(key(x))) seen.set(key(x), x);
  return [...seen.values()];
}
