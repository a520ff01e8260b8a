import * as tf from '@tensorflow/tfjs';
import { deriveSeed, Rng } from '../engine/rng.ts';
import { glorotUniform } from './init.ts';
import { type CnnSpec, cnnBlockShapes } from './shapes.ts';

export type { CnnSpec } from './shapes.ts';

/** Purpose tag of the CNN's init streams (see `deriveSeed`); the MLP's is another. */
const INIT_STREAM = 0xc0417;

/**
 * A convolutional classifier as a `tf.sequential` (so tfjs' save/load formats apply), NHWC throughout: per conv
 * block a conv2d with bias and the activation, then a max-pool (window = stride = the block's pool, when > 1);
 * then flatten, the hidden dense layers (activation, then dropout when set) and a linear layer of `classes`
 * logits. Kernels are Glorot-uniform from `seed` (a conv kernel's fans are its receptive field × channels, as in
 * Keras), biases zero: every rank that builds it with the same seed holds the same weights, on any backend.
 */
export function buildCnn(spec: CnnSpec, seed: number): tf.Sequential {
  const shapes = cnnBlockShapes(spec);
  const collapsed = shapes.findIndex(([h, w]) => h < 1 || w < 1);
  if (collapsed >= 0) {
    throw new Error(
      `CNN input ${spec.input.join('×')}: conv block ${collapsed} leaves no pixels (${shapes[collapsed].join('×')})`,
    );
  }
  const model = tf.sequential();
  // Replaced below by the seeded init; zeros skip tfjs' own (unseeded) random draw.
  const init = { kernelInitializer: 'zeros', biasInitializer: 'zeros' } as const;
  spec.conv.forEach((block, i) => {
    model.add(
      tf.layers.conv2d({
        ...(i === 0 ? { inputShape: [...spec.input] } : {}),
        filters: block.filters,
        kernelSize: block.kernel,
        strides: block.stride,
        padding: block.padding,
        dataFormat: 'channelsLast',
        activation: spec.activation,
        ...init,
      }),
    );
    const pool = block.pool ?? spec.pool;
    if (pool > 1) model.add(tf.layers.maxPooling2d({ poolSize: pool, strides: pool, padding: 'valid' }));
  });
  model.add(tf.layers.flatten());
  for (const units of spec.dense) {
    model.add(tf.layers.dense({ units, activation: spec.activation, ...init }));
    if (spec.dropout > 0) model.add(tf.layers.dropout({ rate: spec.dropout }));
  }
  model.add(tf.layers.dense({ units: spec.classes, activation: 'linear', ...init }));

  let index = 0;
  for (const layer of model.layers) {
    const kind = layer.getClassName();
    if (kind !== 'Conv2D' && kind !== 'Dense') continue;
    const [kernel, bias] = layer.getWeights();
    const shape = kernel.shape;
    // Conv2D kernels are [kh, kw, in, out], dense ones [in, out]: the receptive field multiplies both fans.
    const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
    const [fanIn, fanOut] = [receptive * shape[shape.length - 2], receptive * shape[shape.length - 1]];
    const values = glorotUniform(fanIn, fanOut, new Rng(deriveSeed(seed, INIT_STREAM, index)), kernel.size);
    tf.tidy(() => layer.setWeights([tf.tensor(values, shape), tf.zerosLike(bias)]));
    index++;
  }
  return model;
}
