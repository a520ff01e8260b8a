import { describe, expect, it } from 'vitest';
import { SchedulerSpec } from '../../src/config/schema.ts';
import { betasScheduleFor, lrScheduleFor } from '../../src/engine/lr-schedule.ts';

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

describe('OneCycle (DeepSpeed lr_schedules.OneCycle)', () => {
  const spec = SchedulerSpec.parse({
    type: 'OneCycle',
    params: {
      cycle_min_lr: 0.01,
      cycle_max_lr: 0.1,
      cycle_first_step_size: 4,
      cycle_second_step_size: 6,
      decay_lr_rate: 0.5,
      decay_step_size: 2,
      cycle_min_mom: 0.85,
      cycle_max_mom: 0.95,
      decay_mom_rate: 0.1,
    },
  });

  it('climbs over the first phase, falls over the second, then decays as min / (1 + rate · interval)', () => {
    const lr = lrScheduleFor(spec, 1, 100);
    // Cycle of 10 steps, ratio 0.4; step s uses iteration s + 1, x = (s + 1) / 10.
    const expected = [
      0.01 + 0.09 * (0.1 / 0.4), // s=0: rising, x=0.1
      0.01 + 0.09 * (0.2 / 0.4),
      0.01 + 0.09 * (0.3 / 0.4),
      0.1, // s=3: x=0.4, the peak
      0.01 + 0.09 * ((0.5 - 1) / (0.4 - 1)), // s=4: falling
      0.01 + 0.09 * ((0.9 - 1) / (0.4 - 1)), // s=8
    ];
    const steps = [0, 1, 2, 3, 4, 8];
    steps.forEach((s, i) => {
      expect(lr(s)).toBeCloseTo(expected[i], 12);
    });
    // After the cycle (10 steps): interval = (s − 10 + 1) / 2.
    expect(lr(10)).toBeCloseTo(0.01 / (1 + 0.5 * 0.5), 12);
    expect(lr(13)).toBeCloseTo(0.01 / (1 + 0.5 * 2), 12);
  });

  it("cycles β1 against the lr with β2 at 0.99, and leaves the optimizer's betas alone otherwise", () => {
    const betas = betasScheduleFor(spec);
    const atPeak = betas(3)!; // lr at its peak → momentum at its floor
    expect(atPeak[0]).toBeCloseTo(0.85, 12);
    expect(atPeak[1]).toBe(0.99);
    expect(betas(0)?.[0]).toBeCloseTo(0.95 - 0.1 * 0.25, 12);
    expect(betas(11)?.[0]).toBeCloseTo(0.95 * (1 + 0.1 * 1), 12);
    expect(
      betasScheduleFor(SchedulerSpec.parse({ ...spec, params: { ...spec.params, cycle_momentum: false } }))(
        0,
      ),
    ).toBeUndefined();
    expect(betasScheduleFor(undefined)(0)).toBeUndefined();
  });
});
