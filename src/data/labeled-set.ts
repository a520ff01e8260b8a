/** A labelled classification set held in flat typed arrays: sample i is inputs[i·featureSize …]. */
export interface LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly inputs: Float32Array;
  readonly labels: Uint8Array;
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
  const f = set.featureSize;
  const inputs = new Float32Array(count * f);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const s = indices[from + i];
    inputs.set(set.inputs.subarray(s * f, (s + 1) * f), i * f);
    labels[i] = set.labels[s];
  }
  return { inputs, labels };
}
