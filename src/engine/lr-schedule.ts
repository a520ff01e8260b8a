/**
 * Learning rate as a function of the optimizer step (0-based: the step about to be taken), with DeepSpeed's
 * schedulers' formulas (deepspeed/runtime/lr_schedules.py).
 */
import type { SchedulerSpec } from '../config/schema.ts';

export type LrSchedule = (step: number) => number;

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
