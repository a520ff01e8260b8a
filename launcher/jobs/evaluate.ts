import * as tf from '@tensorflow/tfjs';
import { type Collectives, shardRange } from '../../src/comm/types.ts';
import { gatherBatch, type LabeledSet } from '../../src/data/dataset.ts';
import type { Engine } from '../../src/engine/engine.ts';

/** Test samples per forward pass during evaluation. */
const EVAL_BATCH = 512;

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
