/**
 * Magnitude pruning over the flat parameter space: which tensors are pruned, to what sparsity at which step, and
 * the masks of the elements this rank owns. The engine applies the mask to the owned gradient (a pruned weight
 * contributes nothing to the norm or the optimizer's state) and to the owned parameters after each update, so a
 * pruned weight stays exactly zero in every forward; every `frequency` steps it recomputes the masks from the
 * whole parameters (the same values on every rank, so the same masks), each tensor on its own.
 */
import type { PruningSpec } from '../config/pruning.ts';
import type { FlatRange, TensorSlot } from './flat-params.ts';
import type { Net } from './net.ts';
import type { ParamGroups } from './param-groups.ts';
import { stepKernels } from './step-kernels.ts';

/** When, and to what sparsity, the masks are recomputed (tfmot's two schedules). */
export interface SparsitySchedule {
  readonly kind: 'polynomial' | 'constant';
  /** The final (polynomial) or constant sparsity. */
  readonly sparsity: number;
  /** Polynomial: the sparsity at `beginStep`. */
  readonly initialSparsity: number;
  readonly beginStep: number;
  /** Polynomial: the step the final sparsity is reached at; constant: none (pruning goes on to the end). */
  readonly endStep?: number;
  readonly frequency: number;
  readonly power: number;
}

/** A job's `pruning:` section as the engine's schedule; a polynomial decay ends at the run's last step by default. */
export function sparsityScheduleOf(spec: PruningSpec, totalSteps: number): SparsitySchedule {
  return {
    kind: spec.schedule,
    sparsity: spec.sparsity,
    initialSparsity: spec.initial_sparsity,
    beginStep: spec.begin_step,
    endStep: spec.schedule === 'polynomial' ? (spec.end_step ?? totalSteps - 1) : spec.end_step,
    frequency: spec.frequency,
    power: spec.power,
  };
}

/**
 * The sparsity the masks are recomputed to after step `step`'s update (steps count from 0), or undefined when
 * `step` recomputes none: every `frequency`-th step from `beginStep`, and `endStep` itself (so that the final
 * sparsity is reached even when the frequency does not land on it). Polynomial: s(t) = s_f + (s_i − s_f)(1 − t)^p
 * with t the fraction of [beginStep, endStep] gone by, as tfmot's PolynomialDecay.
 */
export function sparsityAt(s: SparsitySchedule, step: number): number | undefined {
  const end = s.endStep ?? Number.POSITIVE_INFINITY;
  if (step < s.beginStep || step > end) return undefined;
  if ((step - s.beginStep) % s.frequency !== 0 && step !== end) return undefined;
  if (s.kind === 'constant') return s.sparsity;
  const t = Math.min(1, (step - s.beginStep) / (end - s.beginStep));
  return s.sparsity + (s.initialSparsity - s.sparsity) * (1 - t) ** s.power;
}

/** The tensors pruned: every weight matrix and kernel (rank ≥ 2) of the net; not its buffers, not the objective's. */
export function prunableSlots(net: Net, groups: ParamGroups): TensorSlot[] {
  return net.blocks.flatMap((b, i) =>
    groups.groups[i].slots.filter((_, k) => b.params[k].shape.length >= 2 && b.params[k].buffer !== true),
  );
}

/** How many of a tensor's `n` values sparsity `s` sets to zero: n minus tfmot's kept count, round(n(1 − s)). */
export function prunedCount(n: number, s: number): number {
  return n - Math.round(n * (1 - s));
}

/** The masks of the owned part of the pruned tensors, and their application. */
export class MagnitudePruner {
  readonly #slots: readonly TensorSlot[];
  readonly #owned: FlatRange;
  /** 1 keeps, 0 prunes; indexed like the owned range. Every element starts kept. */
  readonly #mask: Uint8Array;
  /** The owned spans of pruned tensors, relative to the owned range's start. */
  readonly #spans: readonly { from: number; to: number }[];
  #masked = false;

  constructor(slots: readonly TensorSlot[], owned: FlatRange) {
    this.#slots = slots;
    this.#owned = owned;
    this.#mask = new Uint8Array(owned.end - owned.start).fill(1);
    this.#spans = slots.flatMap((s) => {
      const from = Math.max(s.offset, owned.start);
      const to = Math.min(s.offset + s.size, owned.end);
      return from < to ? [{ from: from - owned.start, to: to - owned.start }] : [];
    });
  }

  /**
   * Recomputes the masks at sparsity `s` from `full` (every parameter, flat): in each tensor the
   * `prunedCount` values of smallest magnitude are pruned, ties at the threshold in index order, so the count is
   * exact and every rank, given the same values, prunes the same elements.
   */
  update(full: Float32Array, s: number): void {
    for (const slot of this.#slots) {
      const values = full.subarray(slot.offset, slot.offset + slot.size);
      const count = prunedCount(values.length, s);
      const magnitudes = magnitudesOf(values);
      // Below the threshold every value goes; at it, the first `atThreshold` in index order.
      const threshold = count > 0 ? kthSmallest(magnitudes, count - 1) : Number.NEGATIVE_INFINITY;
      let atThreshold = count;
      for (let i = 0; i < values.length; i++) if (Math.abs(values[i]) < threshold) atThreshold--;
      for (let i = 0; i < values.length; i++) {
        const m = Math.abs(values[i]);
        let keep = !(m < threshold);
        if (m === threshold && atThreshold > 0) {
          keep = false;
          atThreshold--;
        }
        const at = slot.offset + i;
        if (at >= this.#owned.start && at < this.#owned.end)
          this.#mask[at - this.#owned.start] = keep ? 1 : 0;
      }
    }
    this.#masked = true;
  }

  /** Masks rebuilt from owned parameters that were pruned before (a resumed run): zero means pruned. */
  restoreFrom(owned: Float32Array): void {
    for (const { from, to } of this.#spans)
      for (let i = from; i < to; i++) this.#mask[i] = owned[i] === 0 ? 0 : 1;
    this.#masked = true;
  }

  /** Zeroes the pruned elements of `owned` (parameters or their gradient, indexed like the owned range). */
  apply(owned: Float32Array): void {
    if (!this.#masked) return;
    const kernels = stepKernels();
    for (const { from, to } of this.#spans) kernels.maskZero(owned, this.#mask, from, to);
  }
}

/** |v| of each value; NaN as +inf, so that a NaN weight sorts last and is never pruned for being small. */
function magnitudesOf(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const m = Math.abs(values[i]);
    out[i] = Number.isNaN(m) ? Number.POSITIVE_INFINITY : m;
  }
  return out;
}

/**
 * The k-th smallest value of `a` (from 0), reordering `a` in place: Hoare's selection with the median of three as
 * the pivot, O(n) on average (a sort, 15× slower here, is not needed: only the threshold is).
 */
export function kthSmallest(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const pivot = medianOf3(a[lo], a[mid], a[hi]);
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

function medianOf3(x: number, y: number, z: number): number {
  return Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
}
