/**
 * A labelled classification set: `length` samples of `featureSize` fp32 values each, with their class indices
 * (bytes, below `numClasses`) in memory. The inputs are read by index, so that they may stay on disk: every
 * format but `.npy` holds them in one flat array (`MemorySet`), a `.npy` set reads them from its file per batch.
 */
export interface LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly labels: Uint8Array;
  /** The inputs of samples `indices[from … from+count)`, one after another, in a fresh array. */
  readInputs(indices: ArrayLike<number>, from: number, count: number): Float32Array;
  /** The samples `rows` of this set, in that order, as a set of their own (a split). */
  subset(rows: ArrayLike<number>): LabeledSet;
}

/** A set held in one flat array: sample i is inputs[i·featureSize …]. */
export class MemorySet implements LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly inputs: Float32Array;
  readonly labels: Uint8Array;

  constructor(set: {
    featureSize: number;
    numClasses: number;
    inputs: Float32Array;
    labels: Uint8Array;
  }) {
    if (set.inputs.length !== set.labels.length * set.featureSize) {
      throw new RangeError(
        `${set.inputs.length} input values are not ${set.labels.length} samples of ${set.featureSize}`,
      );
    }
    this.length = set.labels.length;
    this.featureSize = set.featureSize;
    this.numClasses = set.numClasses;
    this.inputs = set.inputs;
    this.labels = set.labels;
  }

  readInputs(indices: ArrayLike<number>, from: number, count: number): Float32Array {
    const f = this.featureSize;
    const out = new Float32Array(count * f);
    for (let i = 0; i < count; i++) {
      const s = checkedIndex(this, indices[from + i]);
      out.set(this.inputs.subarray(s * f, (s + 1) * f), i * f);
    }
    return out;
  }

  /** A copy: the split is as flat as the set. */
  subset(rows: ArrayLike<number>): MemorySet {
    return new MemorySet({
      featureSize: this.featureSize,
      numClasses: this.numClasses,
      inputs: this.readInputs(rows, 0, rows.length),
      labels: Uint8Array.from(rows, (r) => this.labels[checkedIndex(this, r)]),
    });
  }
}

/** The samples `rows` of a set read by index (one on disk): its split without copying a sample. */
export class IndexView implements LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly labels: Uint8Array;
  readonly #base: LabeledSet;
  readonly #rows: Int32Array;

  constructor(base: LabeledSet, rows: ArrayLike<number>) {
    this.#base = base;
    this.#rows = Int32Array.from(rows, (r) => checkedIndex(base, r));
    this.length = this.#rows.length;
    this.featureSize = base.featureSize;
    this.numClasses = base.numClasses;
    this.labels = Uint8Array.from(this.#rows, (r) => base.labels[r]);
  }

  readInputs(indices: ArrayLike<number>, from: number, count: number): Float32Array {
    const rows = new Int32Array(count);
    for (let i = 0; i < count; i++) rows[i] = this.#rows[checkedIndex(this, indices[from + i])];
    return this.#base.readInputs(rows, 0, count);
  }

  /** A view of the same base (a view of a view reads the base directly). */
  subset(rows: ArrayLike<number>): IndexView {
    return new IndexView(
      this.#base,
      Int32Array.from(rows, (r) => this.#rows[checkedIndex(this, r)]),
    );
  }
}

/** `s`, when it is one of `set`'s sample indices. */
export function checkedIndex(set: { readonly length: number }, s: number): number {
  if (!Number.isInteger(s) || s < 0 || s >= set.length) {
    throw new RangeError(`sample ${s} is outside the set's ${set.length}`);
  }
  return s;
}

/** The samples `indices[from … from+count)` of `set`, copied into fresh arrays ready for `tf.tensor`. */
export function gatherBatch(
  set: LabeledSet,
  indices: ArrayLike<number>,
  from: number,
  count: number,
): { inputs: Float32Array; labels: Int32Array } {
  if (from < 0 || from + count > indices.length) {
    throw new RangeError(`batch [${from}, ${from + count}) is outside the ${indices.length} indices`);
  }
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = set.labels[checkedIndex(set, indices[from + i])];
  return { inputs: set.readInputs(indices, from, count), labels };
}
