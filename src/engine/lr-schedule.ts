/**
 * Learning rate as a function of the optimizer step (0-based: the step about to be taken), with DeepSpeed's
 * schedulers' formulas (deepspeed/runtime/lr_schedules.py).
 */
import type { SchedulerSpec } from '../config/schema.ts';
import type { Betas } from './optimizer.ts';

type OneCycleParams = Extract<SchedulerSpec, { type: 'OneCycle' }>['params'];

const cycleLength = (p: OneCycleParams) =>
  p.cycle_first_step_size + (p.cycle_second_step_size ?? p.cycle_first_step_size);

/**
 * Where a step sits in the cycle, as DeepSpeed's OneCycle computes it: 0 → 1 over the first phase, 1 → 0 over the
 * second; undefined once the cycle is over (the decay phase).
 */
function oneCycleScale(p: OneCycleParams, step: number): number | undefined {
  const total = cycleLength(p);
  if (step >= total) return undefined;
  const ratio = p.cycle_first_step_size / total;
  const iteration = step + 1;
  const x = 1 + iteration / total - Math.floor(1 + iteration / total);
  return x <= ratio ? x / ratio : (x - 1) / (ratio - 1);
}

/** Steps since the cycle ended, in units of decay_step_size (0 when that is 0: no decay). */
function oneCycleDecayInterval(p: OneCycleParams, step: number): number {
  return p.decay_step_size > 0 ? (step - cycleLength(p) + 1) / p.decay_step_size : 0;
}

function oneCycleLr(p: OneCycleParams): LrSchedule {
  return (step) => {
    const scale = oneCycleScale(p, step);
    if (scale !== undefined) return p.cycle_min_lr + (p.cycle_max_lr - p.cycle_min_lr) * scale;
    return p.cycle_min_lr / (1 + p.decay_lr_rate * oneCycleDecayInterval(p, step));
  };
}

/** OneCycle's momentum cycling (β1 against the lr, β2 held at 0.99, as DeepSpeed); other schedules set none. */
export function betasScheduleFor(spec: SchedulerSpec | undefined): BetasSchedule {
  if (spec?.type !== 'OneCycle' || !spec.params.cycle_momentum) return () => undefined;
  const p = spec.params;
  return (step) => {
    const scale = oneCycleScale(p, step);
    if (scale !== undefined) return [p.cycle_max_mom - (p.cycle_max_mom - p.cycle_min_mom) * scale, 0.99];
    return [p.cycle_max_mom * (1 + p.decay_mom_rate * oneCycleDecayInterval(p, step)), 0.99];
  };
}

export type LrSchedule = (step: number) => number;

/** The betas a schedule sets for a step, or undefined where the optimizer's own apply. */
export type BetasSchedule = (step: number) => Betas | undefined;

export function constantLr(lr: number): LrSchedule {
  return () => lr;
}

/** Warm-up progress in [0, 1]: log(step+1)/log(warmup) or step/warmup, then 1. */
function warmupGamma(step: number, warmupSteps: number, type: 'log' | 'linear'): number {
  if (step >= warmupSteps) return 1;
  return type === 'linear' ? step / warmupSteps : Math.log(step + 1) / Math.log(warmupSteps);
}

/** DeepSpeed raises every warm-up to at least 2 steps (the log warm-up divides by log(warmup)). */
const warmupSteps = (n: number) => Math.max(2, n);

/**
 * The job's schedule: `spec` when given (`total_num_steps` defaulting to the job's total), else the optimizer's
 * constant `baseLr`. WarmupCosineLR scales `baseLr`; WarmupLR and WarmupDecayLR set the rate themselves.
 */
export function lrScheduleFor(
  spec: SchedulerSpec | undefined,
  baseLr: number,
  totalSteps: number,
): LrSchedule {
  if (!spec) return constantLr(baseLr);
  switch (spec.type) {
    case 'WarmupLR': {
      const { warmup_min_lr: lo, warmup_max_lr: hi, warmup_type } = spec.params;
      const w = warmupSteps(spec.params.warmup_num_steps);
      return (step) => lo + (hi - lo) * warmupGamma(step, w, warmup_type);
    }
    case 'WarmupDecayLR': {
      const { warmup_min_lr: lo, warmup_max_lr: hi, warmup_type } = spec.params;
      const w = warmupSteps(spec.params.warmup_num_steps);
      const total = spec.params.total_num_steps ?? totalSteps;
      return (step) => {
        const gamma =
          step < w ? warmupGamma(step, w, warmup_type) : Math.max(0, (total - step) / Math.max(1, total - w));
        return lo + (hi - lo) * gamma;
      };
    }
    case 'OneCycle':
      return oneCycleLr(spec.params);
    case 'WarmupCosineLR': {
      const { warmup_min_ratio: r0, cos_min_ratio: rMin, warmup_type } = spec.params;
      const w = warmupSteps(spec.params.warmup_num_steps);
      const total = spec.params.total_num_steps ?? totalSteps;
      return (step) => {
        if (step < w) return baseLr * (r0 + (1 - r0) * warmupGamma(step, w, warmup_type));
        // As DeepSpeed: (step − w + 1)/(total − w); held at the end rather than rising again past `total`.
        const progress = Math.min(1, (step - w + 1) / Math.max(1, total - w));
        return baseLr * Math.max(0, rMin + (1 - rMin) * 0.5 * (1 + Math.cos(Math.PI * progress)));
      };
    }
  }
}
