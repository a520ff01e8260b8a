/**
 * What each rank will hold at each ZeRO stage, from the model's size alone (DeepSpeed's
 * `estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs`, for our fp32 buffers):
 * `--dry-run` prints it before anything starts, and the run's summary prints it beside what the ranks measured.
 */
import { DEFAULT_MAX_REUSE_DISTANCE, type OptimizerSpec } from '../config/schema.ts';
import { type MemoryReport, type ZeroStage, zero3KeepsGathered } from './zero.ts';
import { ZeroShards } from './zero-shards.ts';

const F32 = Float32Array.BYTES_PER_ELEMENT;

/** Per-element fp32 buffers an optimizer keeps: Adam-family m and v; SGD its momentum buffer, if any. */
export function optimizerBuffers(spec: OptimizerSpec): number {
  return spec.type === 'SGD' ? (spec.params.momentum > 0 ? 1 : 0) : 2;
}

export interface ModelSize {
  /** Trainable parameters. */
  parameters: number;
  /** The two largest blocks together, in parameters (ZeRO-3 holds the computing block and the prefetched one). */
  largestPair: number;
}

/**
 * Bytes per rank at `stage` for a world of `world` data-parallel ranks, as src/engine/zero.ts lays them out.
 * `tensorCopies`: the backend's parameter tensors hold a copy of the flat buffer (every backend but wasm, whose
 * tensors are views of it: `residentCopies`).
 */
export function estimateMemory(
  size: ModelSize,
  world: number,
  stage: ZeroStage,
  optimizer: OptimizerSpec,
  maxReuseDistance = DEFAULT_MAX_REUSE_DISTANCE,
  tensorCopies = true,
): MemoryReport {
  const p = new ZeroShards(size.parameters, world);
  // The largest owned share: rank 0's shard holds no padding unless the whole model is smaller than one shard.
  const owned = p.ownedParams(0);
  const ownedLength = stage === 0 ? size.parameters : owned.end - owned.start;
  return {
    // Stages 0–2 keep the padded flat copy (and the forward's tensors, where they copy it); stage 3 only its shard.
    params: stage === 3 ? p.shardLength * F32 : (p.paddedLength + (tensorCopies ? size.parameters : 0)) * F32,
    grads: (stage >= 2 ? p.shardLength : p.paddedLength) * F32,
    optimizer: optimizerBuffers(optimizer) * ownedLength * F32,
    gatheredPeak: stage === 3 ? zero3Gathered(size, maxReuseDistance) * F32 : 0,
  };
}

/** ZeRO-3's most parameters gathered at once: the whole model, or the two largest blocks (`zero3KeepsGathered`). */
export function zero3Gathered(size: ModelSize, maxReuseDistance: number): number {
  return zero3KeepsGathered(size.parameters, maxReuseDistance) ? size.parameters : size.largestPair;
}
