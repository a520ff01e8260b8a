import { glorotKernel } from '../base/init.ts';
import { deriveSeed, Rng } from '../base/rng.ts';
import type { Block } from './net.ts';

/**
 * The initial parameters of blocks that hold a kernel (rank ≥ 2) and biases (rank 1): the kernel Glorot-uniform
 * from its own stream `deriveSeed(seed, stream, blockIndex)`, biases zero. The streams are those the zoo's
 * layers builders have always drawn (one per Dense/Conv2D layer, in order), so a seed means the same weights in
 * old checkpoints, exports and tests.
 */
export function initKernelBlocks(blocks: readonly Block[], seed: number, stream: number): Float32Array[] {
  return blocks.flatMap((block, i) => {
    // A low-rank layer's two factors draw from the stream in turn.
    const kernels = block.params.filter((p) => p.shape.length >= 2);
    if (kernels.length === 0) throw new Error(`block ${block.name}: no kernel to initialise`);
    const rng = new Rng(deriveSeed(seed, stream, i));
    return block.params.map((p) =>
      p.shape.length >= 2 ? glorotKernel(p.shape, rng) : new Float32Array(p.shape.reduce((a, b) => a * b, 1)),
    );
  });
}
