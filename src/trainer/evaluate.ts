import { tf } from '../backend/tf.ts';
import { type Collectives, shardRange } from '../comm/types.ts';
import { gatherBatch, type LabeledSet } from '../data/labeled-set.ts';
import type { Engine } from '../engine/engine.ts';
import type { Net } from '../engine/net.ts';

/** Test samples per forward pass during evaluation. */
export const EVAL_BATCH = 512;

/**
 * Top-1 accuracy over `set`: each rank classifies its contiguous shard, one all-reduce adds up the counts.
 * Collective (ZeRO-3 gathers the model once for it).
 */
export async function evaluateAccuracy(
  engine: Engine,
  sampleShape: readonly number[],
  set: LabeledSet,
  pg: Collectives,
): Promise<number> {
  const { start, end } = shardRange(set.length, pg.size, pg.rank);
  const all = Int32Array.from({ length: set.length }, (_, i) => i);
  const correct = await engine.withParams((params) => {
    let n = 0;
    for (let from = start; from < end; from += EVAL_BATCH) {
      const count = Math.min(EVAL_BATCH, end - from);
      const { inputs, labels } = gatherBatch(set, all, from, count);
      const predicted = tf.tidy(() => {
        const x = tf.tensor(inputs, [count, ...sampleShape]);
        return tf.argMax(engine.forward(params, x).logits, -1).dataSync();
      });
      for (let i = 0; i < count; i++) if (predicted[i] === labels[i]) n++;
    }
    return n;
  });
  const counts = new Float32Array([correct, end - start]);
  await pg.allReduce(counts, { op: 'sum', dtype: 'fp32' });
  return counts[0] / counts[1];
}

/** Samples per forward pass when measuring inference: a serving batch, not the whole set at once. */
export const INFERENCE_BATCH = 256;

/**
 * Inference throughput over the whole of `set` on this rank alone, in samples per second: batched forward passes
 * (inference mode), after one untimed batch that pays for first-call costs. Collective (ZeRO-3 gathers the model);
 * only the rank with `measure` runs the forwards, the others return 0.
 */
export async function inferenceSamplesPerSecond(
  engine: Engine,
  net: Pick<Net, 'inputShape' | 'inputDtype'>,
  set: LabeledSet,
  measure: boolean,
): Promise<number> {
  const all = Int32Array.from({ length: set.length }, (_, i) => i);
  return engine.withParams((params) => {
    if (!measure) return 0;
    const batches: tf.Tensor[] = [];
    for (let from = 0; from < set.length; from += INFERENCE_BATCH) {
      const count = Math.min(INFERENCE_BATCH, set.length - from);
      const { inputs } = gatherBatch(set, all, from, count);
      batches.push(tf.tensor(inputs, [count, ...net.inputShape], net.inputDtype));
    }
    try {
      const run = (x: tf.Tensor) => tf.tidy(() => engine.forward(params, x).logits.dataSync());
      run(batches[0]);
      const t0 = performance.now();
      for (const x of batches) run(x);
      return set.length / ((performance.now() - t0) / 1000);
    } finally {
      tf.dispose(batches);
    }
  });
}
