import { tf } from '../backend/tf.ts';
import type { ConvBlockSpec } from '../config/schema.ts';
import { initKernelBlocks } from '../engine/init-blocks.ts';
import type { Block, BlockOutput, Net } from '../engine/net.ts';
import { type DenseStackSpec, denseBlocks, denseLayers } from './dense-block.ts';
import { type Activation, withActivation } from './net-activation.ts';
import { type CnnSpec, cnnBlockShapes } from './shapes.ts';

export type { CnnSpec } from './shapes.ts';

/** Purpose tag of the CNN's init streams (see `deriveSeed`); the MLP's is another. */
const INIT_STREAM = 0xc0417;

/** The conv stack's output shape [h, w, c]; a spec whose blocks shrink the image to nothing is refused here. */
function convOutputShape(spec: CnnSpec): [number, number, number] {
  const shapes = cnnBlockShapes(spec);
  const collapsed = shapes.findIndex(([h, w]) => h < 1 || w < 1);
  if (collapsed >= 0) {
    throw new Error(
      `CNN input ${spec.input.join('×')}: conv block ${collapsed} leaves no pixels (${shapes[collapsed].join('×')})`,
    );
  }
  return shapes[shapes.length - 1];
}

function denseStackOf(spec: CnnSpec): DenseStackSpec {
  const [h, w, c] = convOutputShape(spec);
  return {
    inputs: h * w * c,
    hidden: spec.dense,
    outputs: spec.classes,
    activation: spec.activation,
    dropout: spec.dropout,
  };
}

function poolOf(spec: CnnSpec, block: ConvBlockSpec): number {
  return block.pool ?? spec.pool;
}

/**
 * One conv block as a Net block, params `kernel` [k, k, inChannels, filters] and `bias` [filters]: conv2d (NHWC)
 * with bias and the activation, then the max-pool; tap `hidden` is its output.
 */
function convBlock(
  name: string,
  block: ConvBlockSpec,
  inChannels: number,
  activation: Activation,
  pool: number,
): Block {
  return {
    name,
    params: [
      { name: 'kernel', shape: [block.kernel, block.kernel, inChannels, block.filters] },
      { name: 'bias', shape: [block.filters] },
    ],
    forward(params: readonly tf.Tensor[], x: tf.Tensor): BlockOutput {
      const [kernel, bias] = params;
      const conv = withActivation(activation, (fused) =>
        tf.fused.conv2d({
          x: x as tf.Tensor4D,
          filter: kernel as tf.Tensor4D,
          strides: block.stride,
          pad: block.padding,
          dataFormat: 'NHWC',
          bias,
          activation: fused,
        }),
      ) as tf.Tensor4D;
      const y = pool > 1 ? tf.maxPool(conv, pool, pool, 'valid') : conv;
      return { y, taps: { hidden: y } };
    },
  };
}

/**
 * A convolutional classifier as a Net, NHWC throughout: one block per conv block (conv2d with bias and the
 * activation, then a max-pool of window = stride = the block's pool, when > 1), then the dense blocks of the
 * MLP (the first one flattens its input; hidden ones with the activation and dropout) ending in `classes`
 * linear logits. Kernels are Glorot-uniform from the seed (a conv kernel's fans are its receptive field ×
 * channels, as in Keras), biases zero.
 */
export function cnnNet(spec: CnnSpec): Net {
  const dense = denseStackOf(spec);
  const conv = spec.conv.map((block, i) =>
    convBlock(
      `conv${i}`,
      block,
      i === 0 ? spec.input[2] : spec.conv[i - 1].filters,
      spec.activation,
      poolOf(spec, block),
    ),
  );
  const blocks = [...conv, ...denseBlocks(dense)];
  return {
    kind: 'cnn',
    inputShape: [...spec.input],
    inputDtype: 'float32',
    blocks,
    init: (seed) => initKernelBlocks(blocks, seed, INIT_STREAM),
  };
}

/** The conv blocks as tfjs layers: Conv2D (bias, activation), then MaxPooling2D when the block pools. */
function convLayers(spec: CnnSpec): tf.layers.Layer[] {
  return spec.conv.flatMap((block, i) => {
    const conv = tf.layers.conv2d({
      ...(i === 0 ? { inputShape: [...spec.input] } : {}),
      filters: block.filters,
      kernelSize: block.kernel,
      strides: block.stride,
      padding: block.padding,
      dataFormat: 'channelsLast',
      activation: spec.activation,
      // Zeros skip tfjs' own (unseeded) random draw: the weights are set from the Net's values.
      kernelInitializer: 'zeros',
      biasInitializer: 'zeros',
    });
    const pool = poolOf(spec, block);
    return pool > 1
      ? [conv, tf.layers.maxPooling2d({ poolSize: pool, strides: pool, padding: 'valid' })]
      : [conv];
  });
}

/** The CNN as a zero-initialised `tf.sequential` (conv layers, Flatten, the dense layers): the export format. */
export function cnnLayers(spec: CnnSpec): tf.Sequential {
  const dense = denseStackOf(spec);
  return tf.sequential({ layers: [...convLayers(spec), tf.layers.flatten(), ...denseLayers(dense)] });
}
