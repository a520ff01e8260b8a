import { describe, expect, it } from 'vitest';
import { SchedulerSpec } from '../../src/config/schema.ts';
import { lrScheduleFor } from '../../src/engine/lr-schedule.ts';

describe('LR schedules (DeepSpeed formulas)', () => {
  it('is the optimizer lr when no scheduler is given', () => {
    const lr = lrScheduleFor(undefined, 0.01, 100);
    expect([lr(0), lr(99)]).toEqual([0.01, 0.01]);
  });

  it('WarmupLR: log warm-up from min to max, then flat', () => {
    const spec = SchedulerSpec.parse({
      type: 'WarmupLR',
      params: { warmup_max_lr: 0.1, warmup_num_steps: 10 },
    });
    const lr = lrScheduleFor(spec, 1, 100);
    expect(lr(0)).toBe(0);
    expect(lr(4)).toBeCloseTo((0.1 * Math.log(5)) / Math.log(10), 12);
    expect(lr(10)).toBe(0.1);
    expect(lr(1000)).toBe(0.1);
  });

  it('WarmupDecayLR: linear warm-up, linear decay to 0 at the job total', () => {
    const spec = SchedulerSpec.parse({
      type: 'WarmupDecayLR',
      params: { warmup_max_lr: 0.1, warmup_num_steps: 10, warmup_type: 'linear' },
    });
    const lr = lrScheduleFor(spec, 1, 110);
    expect(lr(5)).toBeCloseTo(0.05, 12);
    expect(lr(10)).toBeCloseTo(0.1, 12);
    expect(lr(60)).toBeCloseTo(0.05, 12);
    expect(lr(110)).toBe(0);
  });

  it('WarmupCosineLR: scales the optimizer lr, ends at cos_min_ratio', () => {
    const spec = SchedulerSpec.parse({
      type: 'WarmupCosineLR',
      params: { warmup_num_steps: 10, warmup_type: 'linear', cos_min_ratio: 0.01, total_num_steps: 110 },
    });
    const lr = lrScheduleFor(spec, 0.5, 999);
    expect(lr(0)).toBe(0);
    expect(lr(5)).toBeCloseTo(0.25, 12);
    // DeepSpeed counts the cosine from step − warmup + 1: halfway at step 59.
    expect(lr(59)).toBeCloseTo(0.5 * (0.01 + 0.99 * 0.5), 12);
    expect(lr(109)).toBeCloseTo(0.5 * 0.01, 12);
    expect(lr(500)).toBeCloseTo(0.5 * 0.01, 12);
  });
});
