/**
 * Loss scaling for fp16, with DeepSpeed's rules (runtime/fp16/loss_scaler.py: DynamicLossScaler and the static
 * LossScaler), so a job moved from DeepSpeed sees the same scale, step for step, for the same overflows.
 *
 * The engine multiplies the loss by `scale` before backward. At the end of a step (`Engine.finishStep`) it
 * unscales the reduced gradient in the same pass that averages it over the micro-batches (one multiplication by
 * 1 / (accumulation × scale)) and checks its owned part for inf/NaN (`gradStats` in step-kernels.ts, whose JS
 * twin uses `hasNonFinite` below), agrees the flag across ranks in the step's small all-reduce and calls
 * `update(overflow)`; on overflow every rank skips clipping and the optimizer step.
 */
import type { Fp16Spec } from '../config/precision.ts';

export interface LossScalerOptions {
  /** The scale of the first step. */
  initialScale: number;
  /** false: the scale never changes (DeepSpeed's `loss_scale > 0`). */
  dynamic: boolean;
  /** Clean steps, counted from the last overflow, before the scale doubles; then again every window. */
  window: number;
  /** Overflows it takes to halve the scale (DeepSpeed's `delayed_shift`). */
  hysteresis: number;
  /** false (DeepSpeed's default): the budget is refilled only when the scale doubles; true: by any clean step. */
  consecutiveHysteresis: boolean;
  /** The floor. An overflow there with no hysteresis left means training diverged. */
  minScale: number;
}

/** Everything `update` depends on, for checkpoints: a resumed run continues the same sequence of scales. */
export interface LossScalerState {
  scale: number;
  /** `update` calls so far (DeepSpeed's `cur_iter`). */
  iter: number;
  /** The `iter` of the last overflow, −1 before any (DeepSpeed's `last_overflow_iter`). */
  lastOverflowIter: number;
  /** Overflows left before the next halving (DeepSpeed's `cur_hysteresis`). */
  hysteresisLeft: number;
  /** Steps skipped because of an overflow, in all. */
  skippedSteps: number;
  /** Overflows in a row up to the last `update` (0 after a clean step). */
  consecutiveOverflows: number;
}

/** Thrown by `update` when the scale cannot go lower and the gradients still overflow. */
export class LossScaleDivergedError extends Error {
  override name = 'LossScaleDivergedError';
}

/**
 * The loss scale and its bookkeeping, nothing else.
 *
 * Divergence rule: training has diverged when an overflow arrives with the scale at its floor and no hysteresis
 * left to absorb it. For dynamic scaling that is exactly DeepSpeed's `raise_error_at_min_scale` condition (the
 * overflow would lower the scale below `min_loss_scale`); at the floor it allows at most `hysteresis` overflows
 * in a row, fewer when the budget was spent on the way down. A static scale is always at its floor and its
 * budget is `hysteresis` overflows in a row, refilled by any clean step (DeepSpeed skips such steps forever).
 */
export class LossScaler {
  readonly options: Readonly<LossScalerOptions>;
  #scale: number;
  #iter = 0;
  #lastOverflowIter = -1;
  #hysteresisLeft: number;
  #skippedSteps = 0;
  #consecutiveOverflows = 0;

  constructor(options: LossScalerOptions) {
    const { initialScale, window, hysteresis, minScale } = options;
    if (!(initialScale > 0 && Number.isFinite(initialScale)))
      throw new RangeError(`initial loss scale must be positive and finite, got ${initialScale}`);
    if (!(Number.isInteger(window) && window > 0))
      throw new RangeError(`loss scale window must be ≥ 1, got ${window}`);
    if (!(Number.isInteger(hysteresis) && hysteresis > 0))
      throw new RangeError(`hysteresis must be ≥ 1, got ${hysteresis}`);
    if (!(minScale > 0 && Number.isFinite(minScale)))
      throw new RangeError(`min loss scale must be positive and finite, got ${minScale}`);
    this.options = { ...options };
    this.#scale = initialScale;
    this.#hysteresisLeft = hysteresis;
  }

  /** The scaler a job's `fp16` section asks for (DeepSpeed: `loss_scale` 0 = dynamic from 2^initial_scale_power). */
  static fromSpec(spec: Fp16Spec): LossScaler {
    const dynamic = spec.loss_scale === 0;
    return new LossScaler({
      initialScale: dynamic ? 2 ** spec.initial_scale_power : spec.loss_scale,
      dynamic,
      window: spec.loss_scale_window,
      hysteresis: spec.hysteresis,
      consecutiveHysteresis: spec.consecutive_hysteresis,
      minScale: dynamic ? spec.min_loss_scale : spec.loss_scale,
    });
  }

  /** Multiply the loss by this before backward. */
  get scale(): number {
    return this.#scale;
  }

  get skippedSteps(): number {
    return this.#skippedSteps;
  }

  get consecutiveOverflows(): number {
    return this.#consecutiveOverflows;
  }

  /**
   * After each step, with whether its gradients held inf/NaN on any rank (every rank must pass the same
   * value). An overflowed step counts as skipped. Throws `LossScaleDivergedError` per the divergence rule.
   */
  update(overflow: boolean): void {
    const o = this.options;
    if (overflow) {
      this.#skippedSteps++;
      this.#consecutiveOverflows++;
      if (!o.dynamic) {
        if (this.#consecutiveOverflows >= o.hysteresis) this.#diverged();
      } else if (o.hysteresis === 1 || this.#hysteresisLeft === 1) {
        if (this.#scale === o.minScale) this.#diverged();
        this.#scale = Math.max(this.#scale / 2, o.minScale);
      } else {
        this.#hysteresisLeft--;
      }
      this.#lastOverflowIter = this.#iter;
    } else {
      this.#consecutiveOverflows = 0;
      if (o.dynamic) {
        if (o.consecutiveHysteresis) this.#hysteresisLeft = o.hysteresis;
        // Clean steps since the last overflow, minus one: DeepSpeed's `stable_interval`, off by one included
        // (the first doubling comes on the window+1-th clean step, the next ones every window steps).
        const stable = this.#iter - this.#lastOverflowIter - 1;
        if (stable > 0 && stable % o.window === 0) {
          if (!o.consecutiveHysteresis) this.#hysteresisLeft = o.hysteresis;
          this.#scale *= 2;
        }
      }
    }
    this.#iter++;
  }

  state(): LossScalerState {
    return {
      scale: this.#scale,
      iter: this.#iter,
      lastOverflowIter: this.#lastOverflowIter,
      hysteresisLeft: this.#hysteresisLeft,
      skippedSteps: this.#skippedSteps,
      consecutiveOverflows: this.#consecutiveOverflows,
    };
  }

  loadState(s: LossScalerState): void {
    const ints = [s.iter, s.lastOverflowIter, s.hysteresisLeft, s.skippedSteps, s.consecutiveOverflows];
    if (
      !(s.scale > 0 && Number.isFinite(s.scale)) ||
      ints.some((v) => !Number.isInteger(v)) ||
      s.iter < 0 ||
      s.lastOverflowIter < -1 ||
      s.lastOverflowIter >= s.iter ||
      s.hysteresisLeft < 1 ||
      s.hysteresisLeft > this.options.hysteresis ||
      s.skippedSteps < 0 ||
      s.consecutiveOverflows < 0
    ) {
      throw new RangeError(`not a loss scaler state for these options: ${JSON.stringify(s)}`);
    }
    this.#scale = s.scale;
    this.#iter = s.iter;
    this.#lastOverflowIter = s.lastOverflowIter;
    this.#hysteresisLeft = s.hysteresisLeft;
    this.#skippedSteps = s.skippedSteps;
    this.#consecutiveOverflows = s.consecutiveOverflows;
  }

  #diverged(): never {
    const o = this.options;
    const floor = o.dynamic
      ? `its minimum (min_loss_scale ${o.minScale})`
      : `the static loss_scale ${o.minScale}`;
    throw new LossScaleDivergedError(
      `training diverged: the gradients held inf/NaN in ${this.#consecutiveOverflows} steps in a row ` +
        `(step ${this.#iter}) with the loss scale at ${floor}, so lowering it no longer helps. ` +
        'Lower the learning rate, check the data for inf/NaN, or lower fp16.min_loss_scale.',
    );
  }
}

/**
 * Whether `grads` holds an inf or a NaN. `g * 0` is 0 for every finite value and NaN otherwise, and NaN survives
 * any sum: no branch per element, and unlike DeepSpeed's plain sum no false alarm when finite values sum past
 * fp32's range. Four accumulators so the additions do not wait on each other.
 */
export function hasNonFinite(grads: Float32Array): boolean {
  const n = grads.length;
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    a += grads[i] * 0;
    b += grads[i + 1] * 0;
    c += grads[i + 2] * 0;
    d += grads[i + 3] * 0;
  }
  for (; i < n; i++) a += grads[i] * 0;
  return a + b + c + d !== 0;
}
