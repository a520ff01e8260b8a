/**
 * Deterministic dropout. tfjs draws a mask from `tf.dropout(x, rate, noiseShape, seed)`, and without a seed that
 * is an unseeded (Math.random-like) stream: two runs never drop the same units, so a resumed run could not
 * repeat an uninterrupted one. A fixed seed would drop the same units at every step. Masks are therefore seeded
 * per micro-batch from (job seed, step, rank, micro-batch), and per dropout site within it: the same masks on
 * every run, different masks at every step.
 */
import { tf } from '../backend/tf.ts';
import { deriveSeed } from '../base/rng.ts';

/** Purpose tag of the dropout streams (see `deriveSeed`). */
const DROPOUT_STREAM = 0xd0;

/**
 * Dropout inside a block's forward (the `Net` contract): in training, a mask drawn from the micro-batch's seed,
 * the block's index and `k` (the k-th dropout of the block), so that the same (seed, step, rank, micro-batch)
 * drops the same units on every run and a recomputed forward (activation checkpointing, ZeRO-3) drops the
 * same units as the first one. Identity when not training or when `rate` is 0.
 */
export function blockDropout(
  x: tf.Tensor,
  rate: number,
  mode: { training: boolean; seed: number },
  blockIndex: number,
  k = 0,
): tf.Tensor {
  if (!mode.training || rate === 0) return x;
  return tf.dropout(x, rate, undefined, deriveSeed(mode.seed, DROPOUT_STREAM, blockIndex, k));
}

/** The seed of one micro-batch's masks, from (job seed, step, rank, micro-batch). */
export function microBatchSeed(seed: number, step: number, rank: number, micro: number): number {
  return deriveSeed(seed, DROPOUT_STREAM, step, rank, micro);
}
