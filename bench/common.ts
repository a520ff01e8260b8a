/** What the single-process engine benchmarks share: their numeric flags, and one fixed batch trained on step after step. */
import * as tf from '@tensorflow/tfjs';
import type { MicroBatch } from '../src/engine/engine.ts';
import { softmaxCrossEntropy } from '../src/objectives/cross-entropy.ts';

/** A micro-batch maker for `engine.step`: `inputs` of `shape` and class `labels`, fresh tensors each step. */
export function fixedBatch(
  inputs: Float32Array,
  shape: readonly number[],
  labels: Int32Array,
): () => Promise<MicroBatch> {
  return async () => {
    const x = tf.tensor(inputs, [...shape]);
    const y = tf.tensor1d(labels, 'int32');
    return {
      x,
      mode: { training: true, seed: 0 },
      taps: [],
      loss: (out) => softmaxCrossEntropy(out.logits, y),
      dispose: () => tf.dispose([x, y]),
    };
  };
}

/** The number after `--name` on the command line, or `fallback`. */
export function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}
