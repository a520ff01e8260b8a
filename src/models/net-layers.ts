/**
 * A Net's parameter values in a tfjs layers model: export writes the tfjs layers format, which tfjs loads without
 * kd-launch, and the zoo's layers models hold the same tensors in the same order as their Nets.
 */
import { tf } from '../backend/tf.ts';

/**
 * Sets `model`'s weights from `values`, one array per trainable weight in order (a Net's parameter order, as
 * `Net.init` returns them); a count or size that does not match names the weight.
 */
export function setLayersWeights(model: tf.LayersModel, values: readonly Float32Array[]): void {
  const weights = model.trainableWeights;
  if (model.nonTrainableWeights.length > 0) {
    throw new Error('the layers model has non-trainable weights, which a Net has no values for');
  }
  if (weights.length !== values.length) {
    throw new Error(`the layers model has ${weights.length} weights, ${values.length} values were given`);
  }
  const tensors = weights.map((w, i) => {
    const size = w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
    if (values[i].length !== size) {
      throw new Error(
        `weight ${w.originalName} [${w.shape.join(', ')}] needs ${size} values, got ${values[i].length}`,
      );
    }
    return tf.tensor(values[i], w.shape as number[], 'float32');
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
}
