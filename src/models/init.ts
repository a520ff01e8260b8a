import type { Rng } from '../engine/rng.ts';

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
