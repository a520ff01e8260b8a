/** Weight initialisers on our own seeded `Rng`: a seed means the same weights on every rank and backend. */
import type { Rng } from './rng.ts';

/**
 * U(−a, a) with a = sqrt(6 / (fanIn + fanOut)), as Keras' glorot_uniform; `size` values (default fanIn × fanOut,
 * a dense kernel; a conv kernel passes its own size with the receptive-field fans).
 */
export function glorotUniform(fanIn: number, fanOut: number, rng: Rng, size = fanIn * fanOut): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const out = new Float32Array(size);
  for (let i = 0; i < out.length; i++) out[i] = (2 * rng.next() - 1) * limit;
  return out;
}

/**
 * A Glorot-uniform kernel of `shape`: dense kernels are [in, out], conv kernels [kh, kw, in, out], and the
 * receptive field (kh × kw) multiplies both fans, as in Keras.
 */
export function glorotKernel(shape: readonly number[], rng: Rng): Float32Array {
  const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  const size = receptive * shape[shape.length - 2] * shape[shape.length - 1];
  return glorotUniform(receptive * shape[shape.length - 2], receptive * shape[shape.length - 1], rng, size);
}
