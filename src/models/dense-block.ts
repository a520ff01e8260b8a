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
}

interface DenseLayer {
  readonly inputs: number;
  readonly units: number;
  readonly activation: Activation;
  readonly dropout: number;
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
    };
  });
}

/**
 * One dense layer as a block, params `kernel` [inputs, units] and `bias` [units]; tap `hidden` is its output.
 * An input of rank > 2 (NHWC feature maps) is flattened first, in the order tfjs' Flatten layer uses, so a
 * CNN needs no block of its own for it.
 */
function denseBlock(name: string, layer: DenseLayer): Block {
  return {
    name,
    params: [
      { name: 'kernel', shape: [layer.inputs, layer.units] },
      { name: 'bias', shape: [layer.units] },
    ],
    forward(params: readonly tf.Tensor[], x: tf.Tensor, mode: ForwardMode, index: number): BlockOutput {
      const [kernel, bias] = params;
      const a = (x.rank === 2 ? x : tf.reshape(x, [x.shape[0], -1])) as tf.Tensor2D;
      const z = withActivation(layer.activation, (activation) =>
        tf.fused.matMul({ a, b: kernel as tf.Tensor2D, bias, activation }),
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
    const dense = tf.layers.dense({
      ...(i === 0 && inputShape ? { inputShape: [...inputShape] } : {}),
      units: layer.units,
      activation: layer.activation,
      // Zeros skip tfjs' own (unseeded) random draw: the weights are set from the Net's values.
      kernelInitializer: 'zeros',
      biasInitializer: 'zeros',
    });
    return layer.dropout > 0 ? [dense, tf.layers.dropout({ rate: layer.dropout })] : [dense];
  });
}
