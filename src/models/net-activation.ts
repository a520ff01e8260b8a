/**
 * The zoo's activations as plain tfjs ops, computed as tfjs-layers computes them, so that a block's forward and
 * the exported layers model predict the same values.
 */
import { tf } from '../backend/tf.ts';
import type { ModelSpec } from '../config/schema.ts';

/** A hidden layer's activation from the job file, or `linear` (the logits). */
export type Activation = Extract<ModelSpec, { type: 'mlp' | 'cnn' }>['activation'] | 'linear';

/** What tfjs' fused kernels can apply themselves (and differentiate: their gradients cover only these). */
type FusedActivation = 'relu' | 'linear';

function isFused(activation: Activation): activation is FusedActivation {
  return activation === 'relu' || activation === 'linear';
}

function activate(x: tf.Tensor, activation: Exclude<Activation, FusedActivation>): tf.Tensor {
  switch (activation) {
    case 'tanh':
      return tf.tanh(x);
    case 'gelu':
      // The exact (erf) GELU in tfjs-layers' order of operations, for bit-equal results.
      return tf.mul(x, tf.mul(0.5, tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))));
  }
}

/**
 * Runs a fused op (matmul or conv with bias) with `activation` folded in when the kernel supports it, and
 * applies it afterwards otherwise: tfjs-layers' Dense and Conv2D take the same two paths.
 */
export function withActivation(
  activation: Activation,
  fusedOp: (fused: FusedActivation) => tf.Tensor,
): tf.Tensor {
  if (isFused(activation)) return fusedOp(activation);
  return activate(fusedOp('linear'), activation);
}
