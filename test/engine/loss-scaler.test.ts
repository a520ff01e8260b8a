import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Bf16Spec, checkPrecisionExclusive, Fp16Spec } from '../../src/config/precision.ts';
import {
  hasNonFinite,
  LossScaleDivergedError,
  LossScaler,
  type LossScalerOptions,
} from '../../src/engine/loss-scaler.ts';

const X = true; // an overflowed step
const o = false; // a clean step

/** The scale after each `update` of `pattern`. */
function scales(opts: Partial<LossScalerOptions>, pattern: boolean[]): number[] {
  const s = new LossScaler({
    initialScale: 16,
    dynamic: true,
    window: 2,
    hysteresis: 2,
    consecutiveHysteresis: false,
    minScale: 1,
    ...opts,
  });
  return pattern.map((overflow) => {
    s.update(overflow);
    return s.scale;
  });
}

/*
 * Expected sequences worked out by hand from DeepSpeed's DynamicLossScaler.update_scale
 * (deepspeed/runtime/fp16/loss_scaler.py): cur_iter starts at 0 and last_overflow_iter at −1; on overflow, halve
 * (floored at min_scale) when delayed_shift == 1 or cur_hysteresis == 1, else cur_hysteresis −= 1, and set
 * last_overflow_iter = cur_iter; on a clean step, stable_interval = cur_iter − last_overflow_iter − 1 and the
 * scale doubles when stable_interval > 0 and stable_interval % scale_window == 0 (refilling cur_hysteresis
 * there unless consecutive_hysteresis, which refills it on every clean step instead); then cur_iter += 1.
 */
describe("LossScaler reproduces DeepSpeed's DynamicLossScaler", () => {
  // iter:        0  1  2  3  4  5  6  7  8  9 10 11
  const pattern = [o, o, o, X, X, o, o, o, X, o, X, X];

  it('consecutive_hysteresis false (DeepSpeed default): hysteresis refilled only when the scale doubles', () => {
    // iter 0, 1: stable 0, 1 → no change. iter 2: stable 2 % 2 = 0 → 32, hysteresis 2.
    // iter 3: hysteresis 2 → 1, scale kept. iter 4: hysteresis 1 → halve to 16 (hysteresis stays 1).
    // iter 5, 6: stable 0, 1 (counted from the overflow at 4). iter 7: stable 2 → 32, hysteresis 2.
    // iter 8: 2 → 1. iter 9: clean, stable 0, hysteresis NOT refilled. iter 10: hysteresis 1 → 16. iter 11: → 8.
    expect(scales({}, pattern)).toEqual([16, 16, 32, 32, 16, 16, 16, 32, 32, 32, 16, 8]);
  });

  it('consecutive_hysteresis true: any clean step refills the hysteresis', () => {
    // Same up to iter 8; iter 9 (clean) refills hysteresis to 2, so iter 10 only spends it and iter 11 halves.
    expect(scales({ consecutiveHysteresis: true }, pattern)).toEqual([
      16, 16, 32, 32, 16, 16, 16, 32, 32, 32, 32, 16,
    ]);
  });

  it('hysteresis 1 halves on every overflow; the window restarts from the last overflow', () => {
    // window 3: doublings at stable 3, 6, … i.e. iter 3 and 6 from the start; overflow at 7 → 64;
    // then clean iters 8..11 have stable 0..3 → double at iter 11.
    const p = [o, o, o, o, o, o, o, X, o, o, o, o];
    expect(scales({ window: 3, hysteresis: 1 }, p)).toEqual([16, 16, 16, 32, 32, 32, 64, 32, 32, 32, 32, 64]);
  });

  it('never goes below min_loss_scale', () => {
    // 8 → 4 → max(2, 3) = 3; and the window then doubles from 3.
    expect(scales({ initialScale: 8, minScale: 3, hysteresis: 1, window: 1 }, [X, X, o, o])).toEqual([
      4, 3, 3, 6,
    ]);
  });
});

describe('divergence', () => {
  it('throws once an overflow arrives at min_loss_scale with the hysteresis spent (DeepSpeed raises there)', () => {
    const s = new LossScaler({
      initialScale: 2,
      dynamic: true,
      window: 1000,
      hysteresis: 2,
      consecutiveHysteresis: false,
      minScale: 1,
    });
    s.update(true); // hysteresis 2 → 1, scale 2
    s.update(true); // halve to the floor, 1
    expect(s.scale).toBe(1);
    expect(() => s.update(true)).toThrow(LossScaleDivergedError);
    expect(() => s.update(true)).toThrow(/diverged.*min_loss_scale 1/);
  });

  it('at a fresh floor it takes `hysteresis` overflows in a row', () => {
    const s = LossScaler.fromSpec(
      Fp16Spec.parse({ enabled: true, initial_scale_power: 0, hysteresis: 3, min_loss_scale: 1 }),
    );
    s.update(true);
    s.update(true);
    expect(s.scale).toBe(1);
    expect(() => s.update(true)).toThrow(/3 steps in a row/);
  });

  it('a static scale never changes and throws after `hysteresis` overflows in a row', () => {
    const s = LossScaler.fromSpec(Fp16Spec.parse({ enabled: true, loss_scale: 128 }));
    s.update(true);
    s.update(false); // a clean step resets the run of overflows
    s.update(true);
    for (let i = 0; i < 1001; i++) s.update(false);
    expect(s.scale).toBe(128);
    expect(s.skippedSteps).toBe(2);
    s.update(true);
    expect(() => s.update(true)).toThrow(/static loss_scale 128/);
  });
});

describe('defaults and state', () => {
  it("fromSpec uses DeepSpeed's defaults: 2^16, window 1000, hysteresis 2, min 1", () => {
    const spec = Fp16Spec.parse({ enabled: true });
    expect(spec).toEqual({
      enabled: true,
      loss_scale: 0,
      initial_scale_power: 16,
      loss_scale_window: 1000,
      hysteresis: 2,
      consecutive_hysteresis: false,
      min_loss_scale: 1,
    });
    const s = LossScaler.fromSpec(spec);
    expect(s.scale).toBe(65536);
    for (let i = 0; i < 1000; i++) s.update(false);
    expect(s.scale).toBe(65536); // stable_interval reaches 1000 only at the 1001st clean step
    s.update(false);
    expect(s.scale).toBe(131072);
  });

  it('state round-trips: a restored scaler continues the same sequence', () => {
    const opts: LossScalerOptions = {
      initialScale: 1024,
      dynamic: true,
      window: 3,
      hysteresis: 2,
      consecutiveHysteresis: false,
      minScale: 1,
    };
    const pattern = [o, X, o, o, X, X, o, o, o, o, X, o, o, o, o, o];
    const a = new LossScaler(opts);
    const cut = 6;
    for (const p of pattern.slice(0, cut)) a.update(p);
    const saved = JSON.parse(JSON.stringify(a.state()));
    const b = new LossScaler(opts);
    b.loadState(saved);
    expect(b.state()).toEqual(a.state());
    for (const p of pattern.slice(cut)) {
      a.update(p);
      b.update(p);
      expect(b.state()).toEqual(a.state());
    }
    expect(b.skippedSteps).toBe(4);
    expect(() => b.loadState({ ...saved, hysteresisLeft: 5 })).toThrow(RangeError);
    expect(() => b.loadState({ ...saved, scale: Number.NaN })).toThrow(RangeError);
  });
});

describe('hasNonFinite', () => {
  it('finds one inf or NaN anywhere, and no false alarm on finite values near fp32 max', () => {
    for (const n of [0, 1, 3, 4, 5, 1001]) {
      const g = new Float32Array(n).fill(3.4e38); // sums past fp32's range, yet all finite
      expect(hasNonFinite(g)).toBe(false);
      for (const bad of [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN]) {
        for (const at of n > 0 ? [0, n - 1, n >> 1] : []) {
          const h = g.slice();
          h[at] = bad;
          expect(hasNonFinite(h), `${bad} at ${at} of ${n}`).toBe(true);
        }
      }
    }
    expect(hasNonFinite(new Float32Array([-0, 0, 1e-45]))).toBe(false);
  });
});

describe('fp16 / bf16 config', () => {
  const Job = z
    .strictObject({ fp16: Fp16Spec.optional(), bf16: Bf16Spec.optional() })
    .superRefine(checkPrecisionExclusive);
  it('refuses both enabled, naming both fields', () => {
    const r = Job.safeParse({ fp16: { enabled: true }, bf16: { enabled: true } });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0].path).toEqual(['bf16', 'enabled']);
    expect(r.error?.issues[0].message).toMatch(/fp16\.enabled and bf16\.enabled/);
    expect(Job.safeParse({ fp16: { enabled: true }, bf16: { enabled: false } }).success).toBe(true);
    expect(Job.safeParse({ bf16: { enabled: true } }).success).toBe(true);
  });
});
