import * as tf from '@tensorflow/tfjs';
import type { ModelSpec } from '../config/schema.ts';
import { deriveSeed, Rng } from '../engine/rng.ts';
import { glorotUniform } from './init.ts';

export type MlpSpec = Extract<ModelSpec, { type: 'mlp' }>;

/** Purpose tag of the init streams (see `deriveSeed`), so that no other use of the job seed repeats them. */
const INIT_STREAM = 0x1417;

/**
 * A multilayer perceptron as a `tf.sequential` of dense layers (so tfjs' save/load formats apply):
 * layers [784, 512, 512, 10] is 784 inputs, two hidden layers of 512 with the activation (and dropout after
 * each, when set), and 10 linear outputs (logits). Weights are Glorot-uniform from `seed`, biases zero: every
 * rank that builds it with the same seed holds the same weights, on any backend.
 */
export function buildMlp(spec: MlpSpec, seed: number): tf.Sequential {
  const sizes = spec.layers;
  const model = tf.sequential();
  for (let i = 1; i < sizes.length; i++) {
    const hidden = i < sizes.length - 1;
    model.add(
      tf.layers.dense({
        ...(i === 1 ? { inputShape: [sizes[0]] } : {}),
        units: sizes[i],
        activation: hidden ? spec.activation : 'linear',
        // Replaced below by the seeded init; zeros skip tfjs' own (unseeded) random draw.
        kernelInitializer: 'zeros',
        biasInitializer: 'zeros',
      }),
    );
    if (hidden && spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout }));
  }
  let dense = 0;
  for (const layer of model.layers) {
    if (layer.getClassName() !== 'Dense') continue;
    const [fanIn, fanOut] = [sizes[dense], sizes[dense + 1]];
    const kernel = glorotUniform(fanIn, fanOut, new Rng(deriveSeed(seed, INIT_STREAM, dense)));
    tf.tidy(() => layer.setWeights([tf.tensor2d(kernel, [fanIn, fanOut]), tf.zeros([fanOut])]));
    dense++;
  }
  return model;
}
