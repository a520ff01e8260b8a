/**
 * The dense layers of the zoo, once: as `Net` blocks (what the engine trains) and as tfjs layers (what export
 * writes). An MLP is only these; a CNN ends with them. Keeping both forms here keeps them in step.
 */
import { tf } from '../backend/tf.ts';
import type { Block, BlockOutput, ForwardMode } from '../engine/net.ts';
import { blockDropout } from './dropout.ts';
import { type Activation, withActivation } from './net-activation.ts';

/** Hidden dense layers (activation, then dropout) and the linear logits, as an MLP or a CNN's head has them. */
export interface DenseStackSpec {
  /** Features into the first layer (a CNN's flattened conv output). */
  readonly inputs: number;
  readonly hidden: readonly number[];
  readonly outputs: number;
  readonly activation: Activation;
  readonly dropout: number;
  /** Per layer: a rank makes it low-rank (two factors), null or absent keeps it whole. */
  readonly ranks?: readonly (number | null)[];
}

interface DenseLayer {
  readonly inputs: number;
  readonly units: number;
  readonly activation: Activation;
  readonly dropout: number;
  readonly rank: number | null;
}

function stackLayers(spec: DenseStackSpec): DenseLayer[] {
  const sizes = [spec.inputs, ...spec.hidden, spec.outputs];
  return sizes.slice(1).map((units, i) => {
    const hidden = i < spec.hidden.length;
    return {
      inputs: sizes[i],
      units,
      activation: hidden ? spec.activation : 'linear',
      dropout: hidden ? spec.dropout : 0,
      rank: spec.ranks?.[i] ?? null,
    };
  });
}

/**
 * One dense layer as a block, params `kernel` [inputs, units] and `bias` [units]; tap `hidden` is its output.
 * An input of rank > 2 (NHWC feature maps) is flattened first, in the order tfjs' Flatten layer uses, so a
 * CNN needs no block of its own for it.
 */
function denseBlock(name: string, layer: DenseLayer): Block {
  const { inputs, units, rank } = layer;
  return {
    name,
    // A low-rank layer's kernel is the product of its factors `a` [inputs, rank] and `b` [rank, units].
    params: [
      ...(rank === null
        ? [{ name: 'kernel', shape: [inputs, units] }]
        : [
            { name: 'a', shape: [inputs, rank] },
            { name: 'b', shape: [rank, units] },
          ]),
      { name: 'bias', shape: [units] },
    ],
    forward(params: readonly tf.Tensor[], x: tf.Tensor, mode: ForwardMode, index: number): BlockOutput {
      const bias = params[params.length - 1];
      const flat = (x.rank === 2 ? x : tf.reshape(x, [x.shape[0], -1])) as tf.Tensor2D;
      const a = rank === null ? flat : tf.matMul(flat, params[0] as tf.Tensor2D);
      const kernel = params[rank === null ? 0 : 1] as tf.Tensor2D;
      const z = withActivation(layer.activation, (activation) =>
        tf.fused.matMul({ a, b: kernel, bias, activation }),
      );
      const y = blockDropout(z, layer.dropout, mode, index);
      return { y, taps: { hidden: y } };
    },
  };
}

/** The stack as blocks named `dense0`, `dense1`, …; the engine gives each its index in the whole net. */
export function denseBlocks(spec: DenseStackSpec): Block[] {
  return stackLayers(spec).map((layer, i) => denseBlock(`dense${i}`, layer));
}

/**
 * The same stack as tfjs layers (Dense, Dropout after hidden ones), zero-initialised: the caller sets the
 * weights. `inputShape` goes on the first layer when the stack is the model's start.
 */
export function denseLayers(spec: DenseStackSpec, inputShape?: readonly number[]): tf.layers.Layer[] {
  return stackLayers(spec).flatMap((layer, i) => {
    const first = i === 0 && inputShape ? { inputShape: [...inputShape] } : {};
    // A low-rank layer is two Dense layers: the first linear and without a bias, holding factor `a`.
    const factor =
      layer.rank === null
        ? []
        : [tf.layers.dense({ ...first, units: layer.rank, useBias: false, kernelInitializer: 'zeros' })];
    const dense = tf.layers.dense({
      ...(factor.length === 0 ? first : {}),
      units: layer.units,
      activation: layer.activation,
      // Zeros skip tfjs' own (unseeded) random draw: the weights are set from the Net's values.
      kernelInitializer: 'zeros',
      biasInitializer: 'zeros',
    });
    return [...factor, dense, ...(layer.dropout > 0 ? [tf.layers.dropout({ rate: layer.dropout })] : [])];
  });
}
