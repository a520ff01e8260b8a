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
   * flat element range.start + i. Async because LAMB may reduce per-tensor norms across the shards' owners.
   */
  step(params: Float32Array, grads: Float32Array, lr: number): Promise<void>;
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
