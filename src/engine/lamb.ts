import type { TensorSlot } from './flat-params.ts';
import {
  type Betas,
  checkShard,
  type Optimizer,
  type OptimizerState,
  type PartialSumReducer,
  restoreState,
  type ShardLayout,
  shardLength,
} from './optimizer.ts';
import { stepKernels } from './step-kernels.ts';

export interface LambParams {
  betas: readonly [number, number];
  eps: number;
  weight_decay: number;
  /** Bounds of the trust ratio (DeepSpeed FusedLamb's defaults: 10 and 0.01). */
  max_coeff?: number;
  min_coeff?: number;
}

/** A tensor's part of this shard: local indices [lo, hi). */
interface Overlap {
  slot: number;
  lo: number;
  hi: number;
}

/**
 * LAMB as DeepSpeed's FusedLamb computes it (bias correction on, eps outside the sqrt):
 *   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
 *   u = m / (sqrt(v) + eps) + wd·p
 *   ratio = clamp(‖p‖/‖u‖, min_coeff, max_coeff) per tensor, 1 when either norm is 0
 *   p -= lr·sqrt(1-β2^t)/(1-β1^t) · ratio · u
 * The norms are per tensor, and a tensor may straddle shards: each shard computes its partial sums of p² and
 * u² for every tensor, and `reducer` sums them across the shards' owners before the update is applied.
 */
export class Lamb implements Optimizer {
  readonly type = 'Lamb';
  readonly #hp: Required<LambParams>;
  readonly #layout: ShardLayout;
  readonly #reducer: PartialSumReducer | undefined;
  readonly #overlaps: readonly Overlap[];
  readonly #m: Float32Array;
  readonly #v: Float32Array;
  readonly #update: Float32Array;
  /** [‖p‖² of each tensor…, ‖u‖² of each tensor…] over this shard, then over all shards. */
  readonly #sums: Float32Array;
  #t = 0;

  constructor(hp: LambParams, layout: ShardLayout, reducer?: PartialSumReducer) {
    this.#hp = { max_coeff: 10, min_coeff: 0.01, ...hp };
    this.#layout = layout;
    this.#reducer = reducer;
    this.#overlaps = overlaps(layout.slots, layout.range);
    const cut = this.#overlaps.find(({ slot, lo, hi }) => hi - lo !== layout.slots[slot].size);
    if (cut && !reducer) {
      throw new Error(
        `Lamb: the shard [${layout.range.start}, ${layout.range.end}) holds part of ${layout.slots[cut.slot].name}; its norm needs a reducer over the other shards`,
      );
    }
    const n = shardLength(layout);
    this.#m = new Float32Array(n);
    this.#v = new Float32Array(n);
    this.#update = new Float32Array(n);
    this.#sums = new Float32Array(2 * layout.slots.length);
  }

  async step(
    params: Float32Array,
    grads: Float32Array,
    lr: number,
    betas?: Betas,
    gradScale = 1,
  ): Promise<void> {
    checkShard(this.type, this.#layout, params, grads);
    const [b1, b2] = betas ?? this.#hp.betas;
    const { eps, weight_decay: wd, max_coeff, min_coeff } = this.#hp;
    const t = ++this.#t;
    const stepSize = (lr * Math.sqrt(1 - b2 ** t)) / (1 - b1 ** t);
    const nSlots = this.#layout.slots.length;
    const kernels = stepKernels();
    const sums = this.#sums;
    sums.fill(0);

    for (const { slot, lo, hi } of this.#overlaps) {
      const [w2, u2] = kernels.lambMoments(
        params,
        grads,
        this.#m,
        this.#v,
        this.#update,
        lo,
        hi,
        b1,
        b2,
        eps,
        wd,
        gradScale,
      );
      sums[slot] = w2;
      sums[nSlots + slot] = u2;
    }
    // Every shard's owner calls this, even one that holds no element of some tensor: the vectors must match.
    if (this.#reducer) {
      const length = params.length;
      await this.#reducer.allReduce(sums, { op: 'sum', dtype: 'fp32' });
      // The parameters may be a view of the wasm heap (src/backend/resident.ts), which a tfjs operation run
      // meanwhile would have moved: never write them through a detached view.
      if (params.length !== length) throw new Error('Lamb: the parameters moved while the norms were summed');
    }

    for (const { slot, lo, hi } of this.#overlaps) {
      const wNorm = Math.sqrt(sums[slot]);
      const uNorm = Math.sqrt(sums[nSlots + slot]);
      const ratio = wNorm > 0 && uNorm > 0 ? Math.min(max_coeff, Math.max(min_coeff, wNorm / uNorm)) : 1;
      kernels.lambApply(params, this.#update, lo, hi, stepSize * ratio);
    }
  }

  state(): OptimizerState {
    return { t: this.#t, exp_avg: this.#m, exp_avg_sq: this.#v };
  }

  loadState(state: OptimizerState): void {
    this.#t = restoreState(this.type, state, { exp_avg: this.#m, exp_avg_sq: this.#v }, ['t'])['t'];
  }
}

function overlaps(slots: readonly TensorSlot[], range: { start: number; end: number }): Overlap[] {
  const out: Overlap[] = [];
  slots.forEach((s, slot) => {
    const lo = Math.max(s.offset, range.start);
    const hi = Math.min(s.offset + s.size, range.end);
    if (lo < hi) out.push({ slot, lo: lo - range.start, hi: hi - range.start });
  });
  return out;
}
