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

/** What is pruned, when, and to what sparsity the masks are recomputed (tfmot's two schedules). */
export interface SparsitySchedule {
  /** Single weights by magnitude, or whole units (dense units, conv channels) or attention heads by their norm. */
  readonly structure: 'weights' | 'units' | 'heads';
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
    structure: spec.structure,
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

/**
 * A layer's units: the output features of a dense layer (its kernel [inputs, units]) or the channels of a conv
 * (its kernel [k, k, in, units]), with its bias [units], and the next layer's kernel seen as [repeat, units, inner]:
 * what unit u feeds is `next[r, u, :]` for every r (one row of a dense after a dense; one row per pixel of a dense
 * after a conv, as Flatten orders NHWC; every tap of the next conv's window). Pruning unit u zeroes its kernel's
 * slice on the last axis, bias u, and what it feeds.
 */
export interface UnitGroup {
  readonly kernel: TensorSlot;
  readonly bias: TensorSlot;
  readonly next: TensorSlot;
  readonly units: number;
  readonly repeat: number;
}

/**
 * The layers of `net` whose units can be pruned: each block whose parameters are a kernel (dense [in, out] or conv
 * [k, k, in, out]) and a bias [out], followed (past blocks without parameters) by another such block that takes
 * those `out` features or channels in.
 */
export function unitGroups(net: Net, groups: ParamGroups): UnitGroup[] {
  const layers = net.blocks.flatMap((b, i) => {
    const [k, bias] = b.params;
    const isLayer =
      b.params.length === 2 &&
      (k.shape.length === 2 || k.shape.length === 4) &&
      bias.shape.length === 1 &&
      bias.shape[0] === k.shape[k.shape.length - 1];
    return isLayer ? [{ slots: groups.groups[i].slots, shape: k.shape }] : [];
  });
  return layers.slice(0, -1).flatMap((layer, j) => {
    const units = layer.shape[layer.shape.length - 1];
    const next = layers[j + 1].shape;
    // A conv takes channels on its kernel's third axis; a dense its inputs, a multiple of the channels after a conv.
    const takes = next.length === 4 ? next[2] === units : next[0] % units === 0;
    if (!takes) return [];
    const repeat = next.length === 4 ? next[0] * next[1] : next[0] / units;
    return [{ kernel: layer.slots[0], bias: layer.slots[1], next: layers[j + 1].slots[0], units, repeat }];
  });
}

/** An encoder block's attention heads: its head-major parameters (ParamSpec.headMajor), head h the slice h of each. */
export interface HeadGroup {
  readonly slots: readonly TensorSlot[];
  readonly heads: number;
}

/** The blocks of `net` with attention heads to prune. */
export function headGroups(net: Net, groups: ParamGroups): HeadGroup[] {
  return net.blocks.flatMap((b, i) => {
    const slots = groups.groups[i].slots.filter((_, k) => b.params[k].headMajor === true);
    const first = b.params.find((p) => p.headMajor === true);
    return first && slots.length > 0 ? [{ slots, heads: first.shape[0] }] : [];
  });
}

/** Whole units or heads pruned together, instead of single weights. */
export type PrunedGroups =
  | { readonly structure: 'units'; readonly groups: readonly UnitGroup[] }
  | { readonly structure: 'heads'; readonly groups: readonly HeadGroup[] };

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

  /** Units or heads pruning: the groups pruned (the slots are theirs); undefined: single weights. */
  readonly #groups: PrunedGroups | undefined;

  constructor(slots: readonly TensorSlot[], owned: FlatRange, groups?: PrunedGroups) {
    this.#slots = slots;
    this.#owned = owned;
    this.#groups = groups;
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
    const groups = this.#groups;
    if (groups) {
      for (const { from, to } of this.#spans) this.#mask.fill(1, from, to);
      if (groups.structure === 'units') this.#updateUnits(full, s, groups.groups);
      else this.#updateHeads(full, s, groups.groups);
      this.#masked = true;
      return;
    }
    for (const slot of this.#slots) {
      const values = full.subarray(slot.offset, slot.offset + slot.size);
      const keep = keptOf(magnitudesOf(values), prunedCount(values.length, s));
      for (let i = 0; i < values.length; i++) this.#set(slot.offset + i, keep[i]);
    }
    this.#masked = true;
  }

  /**
   * Unit pruning at sparsity `s`: in each layer the `prunedCount` units whose incoming weights have the smallest L2
   * norm (ties in index order) lose those weights, their bias and what they feed in the next layer's kernel.
   */
  #updateUnits(full: Float32Array, s: number, groups: readonly UnitGroup[]): void {
    for (const g of groups) {
      const kernel = full.subarray(g.kernel.offset, g.kernel.offset + g.kernel.size);
      const norms = new Float32Array(g.units);
      for (let i = 0; i < kernel.length; i++) norms[i % g.units] += kernel[i] * kernel[i];
      const keep = keptOf(magnitudesOf(norms.map(Math.sqrt)), prunedCount(g.units, s));
      const inner = g.next.size / (g.repeat * g.units);
      for (let u = 0; u < g.units; u++) {
        if (keep[u]) continue;
        for (let i = u; i < g.kernel.size; i += g.units) this.#set(g.kernel.offset + i, 0);
        this.#set(g.bias.offset + u, 0);
        for (let r = 0; r < g.repeat; r++) {
          const row = g.next.offset + (r * g.units + u) * inner;
          for (let j = 0; j < inner; j++) this.#set(row + j, 0);
        }
      }
    }
  }

  /**
   * Heads pruning at sparsity `s`: in each block the `prunedCount` heads (one kept at least) whose weights have the
   * smallest L2 norm (ties in index order) lose them all: a pruned head attends uniformly to a zero value and adds
   * nothing to the block's output.
   */
  #updateHeads(full: Float32Array, s: number, groups: readonly HeadGroup[]): void {
    for (const g of groups) {
      const norms = new Float32Array(g.heads);
      for (const slot of g.slots) {
        const size = slot.size / g.heads;
        for (let i = 0; i < slot.size; i++) norms[Math.floor(i / size)] += full[slot.offset + i] ** 2;
      }
      const count = Math.min(prunedCount(g.heads, s), g.heads - 1);
      const keep = keptOf(magnitudesOf(norms.map(Math.sqrt)), count);
      for (let h = 0; h < g.heads; h++) {
        if (keep[h]) continue;
        for (const slot of g.slots) {
          const size = slot.size / g.heads;
          for (let i = 0; i < size; i++) this.#set(slot.offset + h * size + i, 0);
        }
      }
    }
  }

  /** Sets the mask of flat position `at`, where this rank owns it. */
  #set(at: number, keep: number): void {
    if (at >= this.#owned.start && at < this.#owned.end) this.#mask[at - this.#owned.start] = keep;
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

/**
 * 1 for the values kept, 0 for the `count` of smallest magnitude: below the threshold every value goes, at it the
 * first ones in index order, so the count is exact and the choice the same wherever the values are.
 */
function keptOf(magnitudes: Float32Array, count: number): Uint8Array {
  const keep = new Uint8Array(magnitudes.length).fill(1);
  if (count === 0) return keep;
  const threshold = kthSmallest(magnitudes.slice(), count - 1);
  let atThreshold = count;
  for (const m of magnitudes) if (m < threshold) atThreshold--;
  for (let i = 0; i < magnitudes.length; i++) {
    const m = magnitudes[i];
    if (m < threshold) keep[i] = 0;
    else if (m === threshold && atThreshold > 0) {
      keep[i] = 0;
      atThreshold--;
    }
  }
  return keep;
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
