/**
 * The flat parameter space: every tensor of a model back to back in one fp32 buffer (parameters, gradients and
 * optimizer state each), so that collectives move one buffer per step instead of one per tensor, and optimizers
 * (and ZeRO shards) work on contiguous ranges of it.
 */

/** Where one tensor lives in the flat parameter space. */
export interface TensorSlot {
  readonly name: string;
  readonly shape: readonly number[];
  readonly offset: number;
  readonly size: number;
}

/** A half-open range [start, end) of the flat parameter space. */
export interface FlatRange {
  readonly start: number;
  readonly end: number;
}

/** Lays tensors of these shapes out back to back, in order. */
export function layoutSlots(tensors: readonly { name: string; shape: readonly number[] }[]): TensorSlot[] {
  let offset = 0;
  return tensors.map(({ name, shape }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const slot = { name, shape: [...shape], offset, size };
    offset += size;
    return slot;
  });
}
