/**
 * TextBrewer's schedulers: the temperature (constant, or per sample from the logits: flsw and cwsm, both from
 * "Preparing Lessons: Improve Knowledge Distillation with Better Supervision", arXiv:1911.07471) and the weights of
 * the KD and hard-label terms as functions of the step.
 */
import { tf } from '../../backend/tf.ts';
import type { TemperatureSchedulerSpec, WeightSchedulerName } from '../../config/distillation.ts';
import { l2Normalize, type Temperature } from './losses.ts';

/**
 * `x` with its gradient cut: the value flows on, no gradient flows back. TextBrewer computes the temperature from
 * detached logits; without this the student would be trained to move its own temperature.
 */
export const stopGradient: (x: tf.Tensor) => tf.Tensor = tf.customGrad((x) => ({
  value: tf.clone(x as tf.Tensor),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as (x: tf.Tensor) => tf.Tensor;

/**
 * flsw: τ_i = τ₀ + β·(mean(w) − w_i), w_i = (1 − cos(z_S,i, z_T,i))^γ. Samples where student and teacher disagree
 * more (larger w) get a lower temperature, i.e. sharper targets. One τ per row of the logits, without gradient.
 */
export function flswTemperature(
  logitsS: tf.Tensor,
  logitsT: tf.Tensor,
  base: number,
  beta: number,
  gamma: number,
): tf.Tensor {
  return tf.tidy(() => {
    const cos = tf.sum(tf.mul(l2Normalize(stopGradient(logitsS), -1), l2Normalize(logitsT, -1)), -1);
    const w = tf.pow(tf.sub(1, cos), gamma);
    return tf.add(base, tf.mul(tf.sub(tf.mean(w), w), beta));
  });
}

/**
 * cwsm: τ_i = τ₀ + β·(mean(w) − w_i), w_i = 1 / (max_c softmax(z_S,i)_c + 0.001). Samples the student is less
 * confident about (larger w) get a lower temperature. One τ per row of the logits, without gradient.
 */
export function cwsmTemperature(logitsS: tf.Tensor, base: number, beta: number): tf.Tensor {
  return tf.tidy(() => {
    const confidence = tf.max(tf.softmax(stopGradient(logitsS)), -1);
    const w = tf.div(1, tf.add(confidence, 1e-3));
    return tf.add(base, tf.mul(tf.sub(tf.mean(w), w), beta));
  });
}

/** The temperature the spec gives for these logits: the base value, or one per row (flsw, cwsm). */
export function temperatureFor(
  scheduler: TemperatureSchedulerSpec,
  base: number,
  logitsS: tf.Tensor,
  logitsT: tf.Tensor,
): Temperature {
  switch (scheduler.type) {
    case 'none':
    case 'constant':
      return base;
    case 'flsw':
      return flswTemperature(logitsS, logitsT, base, scheduler.beta, scheduler.gamma);
    case 'cwsm':
      return cwsmTemperature(logitsS, base, scheduler.beta);
  }
}

/**
 * A loss weight at optimizer step `step` of `totalSteps`: `weight` (none), weight·(1 − step/total) (linear_decay)
 * or weight·step/total (linear_growth). The fraction is clamped to [0, 1] so steps past the end keep the last value.
 */
export function scheduledWeight(
  scheduler: WeightSchedulerName,
  weight: number,
  step: number,
  totalSteps: number,
): number {
  if (scheduler === 'none') return weight;
  if (!(totalSteps > 0))
    throw new RangeError(`a ${scheduler} weight needs the job's total steps (got ${totalSteps})`);
  const x = Math.min(1, Math.max(0, step / totalSteps));
  return scheduler === 'linear_decay' ? weight * (1 - x) : weight * x;
}
