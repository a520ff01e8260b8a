import { tf } from '../backend/tf.ts';
import type { LowRankSpec } from '../config/low-rank.ts';
import type { ModelSpec } from '../config/schema.ts';
import { initKernelBlocks } from '../engine/init-blocks.ts';
import { lowRankFactors, rankForEnergy, svd } from '../engine/low-rank.ts';
import type { Net } from '../engine/net.ts';
import { type DenseStackSpec, denseBlocks, denseLayers } from './dense-block.ts';

export type MlpSpec = Extract<ModelSpec, { type: 'mlp' }>;

/** Purpose tag of the init streams (see `deriveSeed`), so that no other use of the job seed repeats them. */
const INIT_STREAM = 0x1417;

function stackOf(spec: MlpSpec): DenseStackSpec {
  const sizes = spec.layers;
  return {
    inputs: sizes[0],
    hidden: sizes.slice(1, -1),
    outputs: sizes[sizes.length - 1],
    activation: spec.activation,
    dropout: spec.dropout,
    ...(spec.ranks ? { ranks: spec.ranks } : {}),
  };
}

/**
 * A multilayer perceptron as a Net: layers [784, 512, 512, 10] is 784 inputs, two hidden blocks of 512 with the
 * activation (and dropout, when set) and a block of 10 linear outputs (logits); one block per layer, each with
 * a `kernel` and a `bias` and tap `hidden`. Weights are Glorot-uniform from the seed, biases zero: every rank
 * that inits it with the same seed holds the same weights, on any backend.
 */
export function mlpNet(spec: MlpSpec): Net {
  const blocks = denseBlocks(stackOf(spec));
  return {
    kind: 'mlp',
    inputShape: [spec.layers[0]],
    inputDtype: 'float32',
    blocks,
    init: (seed) => initKernelBlocks(blocks, seed, INIT_STREAM),
  };
}

/** The MLP as a zero-initialised `tf.sequential` of Dense (and Dropout) layers, the tfjs export format. */
export function mlpLayers(spec: MlpSpec): tf.Sequential {
  return tf.sequential({ layers: denseLayers(stackOf(spec), [spec.layers[0]]) });
}

/**
 * The trained MLP (`values`: [kernel, bias] per layer) with each layer factorised by its SVD as `spec` says: rank r
 * from `rank`, or each layer's own from `energy`, wherever r · (inputs + units) < inputs · units. Returns the MLP with
 * its `ranks` and the values of its factors.
 */
export function toLowRank(
  spec: MlpSpec,
  values: readonly Float32Array[],
  lowRank: LowRankSpec,
): { spec: MlpSpec; values: Float32Array[] } {
  if (spec.ranks) throw new Error('the MLP is low-rank already: give low_rank to a whole one');
  const ranks: (number | null)[] = [];
  const out: Float32Array[] = [];
  for (let l = 0; l + 1 < spec.layers.length; l++) {
    const [m, n] = [spec.layers[l], spec.layers[l + 1]];
    const [kernel, bias] = [values[2 * l], values[2 * l + 1]];
    const r = lowRank.rank ?? rankForEnergy(svd(kernel, m, n).s, lowRank.energy ?? 1);
    if (r * (m + n) < m * n) {
      const { a, b } = lowRankFactors(kernel, m, n, r);
      ranks.push(r);
      out.push(a, b, bias);
    } else {
      ranks.push(null);
      out.push(kernel, bias);
    }
  }
  return { spec: { ...spec, ranks }, values: out };
}
