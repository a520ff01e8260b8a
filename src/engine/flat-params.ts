/**
 * Parameters and gradients of a model as one flat fp32 buffer each: collectives move one buffer per step
 * instead of one per tensor, and optimizers (and ZeRO shards) work on contiguous ranges of it.
 */
import { tf } from '../backend/tf.ts';

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

export class FlatParams {
  readonly slots: readonly TensorSlot[];
  /** Total number of parameters. */
  readonly length: number;
  /** fp32 master copy of the parameters; the tf variables are written from it after each update. */
  readonly params: Float32Array;
  /** Gradient accumulator, same layout as `params`. */
  readonly grads: Float32Array;
  readonly #variables: readonly tf.Variable[];

  constructor(variables: readonly tf.Variable[]) {
    const names = new Set(variables.map((v) => v.name));
    if (names.size !== variables.length)
      throw new Error('FlatParams: trainable variable names must be unique');
    for (const v of variables) {
      if (v.dtype !== 'float32') throw new Error(`FlatParams: ${v.name} is ${v.dtype}; only float32 trains`);
    }
    this.#variables = variables;
    this.slots = layoutSlots(variables);
    const last = this.slots.at(-1);
    this.length = last ? last.offset + last.size : 0;
    this.params = new Float32Array(this.length);
    this.grads = new Float32Array(this.length);
    this.readParams();
  }

  /** Copies the variables' current values into `params`. */
  readParams(): void {
    this.#variables.forEach((v, i) => {
      this.params.set(v.dataSync() as Float32Array, this.slots[i].offset);
    });
  }

  /** Writes `params` back into the variables. */
  writeParams(): void {
    this.#variables.forEach((v, i) => {
      const { offset, size, shape } = this.slots[i];
      // A copy: the cpu backend keeps the array it is given, and `params` changes again next step.
      const value = tf.tensor(this.params.slice(offset, offset + size), [...shape], 'float32');
      v.assign(value);
      value.dispose();
    });
  }

  zeroGrads(): void {
    this.grads.fill(0);
  }

  /** Adds gradients keyed by variable name (what `tf.variableGrads` returns) into `grads`. */
  accumulateGrads(grads: tf.NamedTensorMap): void {
    this.#variables.forEach((v, i) => {
      const g = grads[v.name];
      // A variable the loss does not use has no gradient (torch leaves `.grad` None): it adds nothing.
      if (g === undefined) return;
      const values = g.dataSync() as Float32Array;
      const { offset, size } = this.slots[i];
      if (values.length !== size)
        throw new Error(`FlatParams: gradient of ${v.name} has ${values.length} values, expected ${size}`);
      const acc = this.grads;
      for (let j = 0; j < size; j++) acc[offset + j] += values[j];
    });
  }
}
