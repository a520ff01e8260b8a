import type { Block } from './net.ts';
import { deriveSeed, Rng } from './rng.ts';

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

/**
 * The initial parameters of blocks that hold a kernel (rank ≥ 2) and biases (rank 1): the kernel Glorot-uniform
 * from its own stream `deriveSeed(seed, stream, blockIndex)`, biases zero. The streams are those the zoo's
 * layers builders have always drawn (one per Dense/Conv2D layer, in order), so a seed means the same weights in
 * old checkpoints, exports and tests.
 */
export function initKernelBlocks(blocks: readonly Block[], seed: number, stream: number): Float32Array[] {
  return blocks.flatMap((block, i) => {
    const kernels = block.params.filter((p) => p.shape.length >= 2);
    if (kernels.length !== 1) {
      throw new Error(`block ${block.name}: expected one kernel to initialise, found ${kernels.length}`);
    }
    const rng = new Rng(deriveSeed(seed, stream, i));
    return block.params.map((p) =>
      p.shape.length >= 2 ? glorotKernel(p.shape, rng) : new Float32Array(p.shape.reduce((a, b) => a * b, 1)),
    );
  });
}
