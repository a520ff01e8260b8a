/**
 * Gradients summed into a flat fp32 buffer slot by slot, where a slot's first gradient since `clear` is copied in
 * and only later ones are added: a step with one micro-batch writes each gradient once, instead of zero-filling
 * the buffer and adding into the zeros (two passes over every parameter, 1.3 ms of a 28 ms MLP step).
 */
import { tensorFloats } from '../backend/tensor-memory.ts';
import type { tf } from '../backend/tf.ts';
import { reduceInto } from '../comm/reduce-op.ts';
import type { TensorSlot } from './flat-params.ts';

export class FlatGrads {
  /** The sums; element 0 is flat element `base`. Whole only after `settle`. */
  readonly values: Float32Array;
  readonly #base: number;
  readonly #written = new Set<TensorSlot>();

  constructor(values: Float32Array, base: number) {
    this.values = values;
    this.#base = base;
  }

  /** Starts a new sum: every slot's next gradient overwrites what the buffer holds. */
  clear(): void {
    this.#written.clear();
  }

  /** Adds one gradient tensor (or null: the loss does not use the slot) per slot of `slots`. */
  add(slots: readonly TensorSlot[], grads: readonly (tf.Tensor | null)[]): void {
    slots.forEach((slot, i) => {
      const g = grads[i];
      if (!g) return;
      if (g.size !== slot.size) {
        throw new Error(`gradient of ${slot.name} has ${g.size} values, expected ${slot.size}`);
      }
      const at = slot.offset - this.#base;
      const sum = this.values.subarray(at, at + slot.size);
      if (this.#written.has(slot)) reduceInto('sum', sum, tensorFloats(g));
      else {
        sum.set(tensorFloats(g));
        this.#written.add(slot);
      }
    });
  }

  /**
   * Zeroes the slots of `slots` that received no gradient since `clear`, which makes the buffer the whole sum.
   * The buffer's other elements (padding) are never written, and stay as they were made: zero.
   */
  settle(slots: readonly TensorSlot[]): void {
    for (const slot of slots) {
      if (this.#written.has(slot)) continue;
      const at = slot.offset - this.#base;
      this.values.fill(0, at, at + slot.size);
    }
  }
}
