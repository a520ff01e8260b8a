/** Small nets for the distillation tests: a one-head self-attention block that exposes its taps, and a head. */
import * as tf from '@tensorflow/tfjs';
import { deriveSeed, Rng } from '../../src/base/rng.ts';
import type { Block, Net } from '../../src/engine/net.ts';

/**
 * x [batch, length, dIn] → a = softmax((x·Wq)(x·Wq)ᵀ/√dq) [batch, 1, length, length], y = relu(a·x·Wv)
 * [batch, length, width]; taps `attention` = a and `hidden` = y.
 */
function attentionBlock(name: string, dIn: number, width: number): Block {
  return {
    name,
    params: [
      { name: 'wq', shape: [dIn, 2] },
      { name: 'wv', shape: [dIn, width] },
    ],
    forward([wq, wv], x) {
      const [b, l] = x.shape;
      const q = tf.reshape(tf.matMul(tf.reshape(x, [-1, dIn]), wq), [b, l, 2]);
      const a = tf.softmax(tf.div(tf.matMul(q, q, false, true), Math.SQRT2));
      const v = tf.reshape(tf.matMul(tf.reshape(x, [-1, dIn]), wv), [b, l, width]);
      const y = tf.relu(tf.matMul(a, v));
      return { y, taps: { attention: tf.expandDims(a, 1), hidden: y } };
    },
  };
}

/** Mean over positions, then a dense layer to the logits. */
function headBlock(dIn: number, classes: number): Block {
  return {
    name: 'head',
    params: [
      { name: 'kernel', shape: [dIn, classes] },
      { name: 'bias', shape: [classes] },
    ],
    forward([k, b], x) {
      return { y: tf.add(tf.matMul(tf.mean(x, 1), k), b) };
    },
  };
}

/** `widths.length` attention blocks of those widths on [length, dIn] inputs, then the head. */
export function seqNet(widths: readonly number[], dIn: number, classes: number, length = 3): Net {
  const blocks: Block[] = [];
  let d = dIn;
  widths.forEach((w, i) => {
    blocks.push(attentionBlock(`att${i}`, d, w));
    d = w;
  });
  blocks.push(headBlock(d, classes));
  return {
    kind: 'seq-test',
    inputShape: [length, dIn],
    inputDtype: 'float32',
    blocks,
    init(seed) {
      const rng = new Rng(deriveSeed(seed, 99));
      return blocks.flatMap((b) =>
        b.params.map((p) => {
          const n = p.shape.reduce((a, x) => a * x, 1);
          return Float32Array.from({ length: n }, () => rng.next() * 1.6 - 0.8);
        }),
      );
    },
  };
}

/** `count` samples of [length, dIn] from `seed`, flat. */
export function sampleInputs(count: number, length: number, dIn: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: count * length * dIn }, () => rng.next() * 2 - 1);
}

/** `weights` grouped per block as tensors (or variables), for `forwardBlocks`. */
export function perBlock<T extends tf.Tensor>(
  net: Net,
  weights: readonly Float32Array[],
  make: (w: Float32Array, shape: number[], name: string) => T,
): T[][] {
  let k = 0;
  return net.blocks.map((b) => b.params.map((p) => make(weights[k++], [...p.shape], `${b.name}/${p.name}`)));
}
