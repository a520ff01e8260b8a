/**
 * Optimizers work on flat fp32 buffers, or on one contiguous shard [start, end) of the flat parameter space
 * (ZeRO stage ≥ 1 gives each rank one). They keep their state (moments) for that shard only.
 */
import type { Collectives } from '../comm/types.ts';
import type { FlatRange, TensorSlot } from './flat-params.ts';

export interface Optimizer {
  readonly type: string;
  /**
   * One update, in place. `params` and `grads` hold the flat elements [range.start, range.end): element i is
   * flat element range.start + i. Each gradient element is multiplied by `gradScale` (rounded to fp32) before
   * use: clipping, without a pass of its own; `grads` is left as it was. Async because LAMB may reduce
   * per-tensor norms across the shards' owners.
   */
  step(
    params: Float32Array,
    grads: Float32Array,
    lr: number,
    betas?: Betas,
    gradScale?: number,
  ): Promise<void>;
  /**
   * Everything the next updates depend on (moments, step count), for checkpoints. The arrays are the live
   * buffers, not copies: write them out before the next step.
   */
  state(): OptimizerState;
  /** Restores what `state()` returned (same type, same shard); throws naming the entry that does not fit. */
  loadState(state: OptimizerState): void;
}

/**
 * Adam's and LAMB's (β1, β2) for one step, when a schedule sets them (OneCycle's momentum cycling); the
 * configured betas apply otherwise. Optimizers without betas (SGD) ignore it, as DeepSpeed does.
 */
export type Betas = readonly [number, number];

/** An optimizer's state: per-element buffers of its shard and scalar counters, by name. */
export type OptimizerState = Record<string, Float32Array | number>;

/**
 * Copies `state` into an optimizer's buffers and returns its counters, checking that every entry is present and
 * has the shard's length (a checkpoint of another optimizer or shard fails here, by name).
 */
export function restoreState(
  type: string,
  state: OptimizerState,
  buffers: Record<string, Float32Array | undefined>,
  counters: readonly string[],
): Record<string, number> {
  for (const [name, buf] of Object.entries(buffers)) {
    if (!buf) continue;
    const v = state[name];
    if (!(v instanceof Float32Array)) throw new Error(`${type}: optimizer state '${name}' is missing`);
    if (v.length !== buf.length) {
      throw new Error(`${type}: optimizer state '${name}' has ${v.length} elements, the shard ${buf.length}`);
    }
    buf.set(v);
  }
  const out: Record<string, number> = {};
  for (const name of counters) {
    const v = state[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new Error(`${type}: optimizer state '${name}' is missing or not a step count`);
    }
    out[name] = v;
  }
  return out;
}

/** What an optimizer knows of the parameter space: every tensor's slot, and the shard it updates. */
export interface ShardLayout {
  readonly slots: readonly TensorSlot[];
  readonly range: FlatRange;
}

/**
 * Sums per-tensor partial values across the ranks that own the other shards (every owner calls it with a
 * vector of the same length, in the same order). A process group satisfies it.
 */
export type PartialSumReducer = Pick<Collectives, 'allReduce'>;

/** The whole flat space as one shard: stage 0, every rank updates everything. */
export function fullLayout(slots: readonly TensorSlot[]): ShardLayout {
  const last = slots.at(-1);
  return { slots, range: { start: 0, end: last ? last.offset + last.size : 0 } };
}

export function shardLength(layout: ShardLayout): number {
  return layout.range.end - layout.range.start;
}

export function checkShard(
  type: string,
  layout: ShardLayout,
  params: Float32Array,
  grads: Float32Array,
): void {
  const n = shardLength(layout);
  if (params.length !== n || grads.length !== n) {
    throw new RangeError(
      `${type}: the shard [${layout.range.start}, ${layout.range.end}) has ${n} elements, got params ${params.length} and grads ${grads.length}`,
    );
  }
}
