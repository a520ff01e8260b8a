/**
 * The trained projections of intermediate matches (TextBrewer's `proj: [linear, dim_S, dim_T]`): a dense layer from
 * the student's feature width to the teacher's, applied to the student's feature before the match loss. They are
 * parameters of the objective, so the engine trains, all-reduces and checkpoints them with the student.
 */
import { tf } from '../../backend/tf.ts';
import { glorotUniform } from '../../base/init.ts';
import { deriveSeed, Rng } from '../../base/rng.ts';
import type { ParamSpec } from '../../engine/net.ts';

export type ProjectionKind = 'linear' | 'relu' | 'tanh';

export interface ProjectionSpec {
  readonly kind: ProjectionKind;
  readonly dimS: number;
  readonly dimT: number;
}

/** Purpose tag of the projections' init streams (see `deriveSeed`), apart from every model's. */
const PROJECTION_STREAM = 0x7d15;

/** A projection's parameters: `<name>/kernel` [dim_S, dim_T] and `<name>/bias` [dim_T] (Keras' dense layout). */
export function projectionParams(name: string, spec: ProjectionSpec): ParamSpec[] {
  return [
    { name: `${name}/kernel`, shape: [spec.dimS, spec.dimT] },
    { name: `${name}/bias`, shape: [spec.dimT] },
  ];
}

/**
 * Initial kernel (Glorot-uniform) and bias (zeros) of the `index`-th projection, from `seed` alone: the same on
 * every rank; distinct projections draw from unrelated streams.
 */
export function initProjection(seed: number, index: number, spec: ProjectionSpec): Float32Array[] {
  const rng = new Rng(deriveSeed(seed, PROJECTION_STREAM, index));
  return [glorotUniform(spec.dimS, spec.dimT, rng), new Float32Array(spec.dimT)];
}

/** x [..., dim_S] → x·kernel + bias [..., dim_T], then the kind's activation. Differentiable in all three. */
export function applyProjection(
  kind: ProjectionKind,
  kernel: tf.Tensor,
  bias: tf.Tensor,
  x: tf.Tensor,
): tf.Tensor {
  const [dimS, dimT] = kernel.shape;
  const width = x.shape[x.shape.length - 1];
  if (width !== dimS) {
    throw new RangeError(`proj expects student features of width ${dimS}, got ${width} (shape [${x.shape}])`);
  }
  return tf.tidy(() => {
    const flat = tf.reshape(x, [-1, dimS]);
    const y = tf.reshape(tf.add(tf.matMul(flat, kernel), bias), [...x.shape.slice(0, -1), dimT]);
    if (kind === 'relu') return tf.relu(y);
    if (kind === 'tanh') return tf.tanh(y);
    return y;
  });
}
