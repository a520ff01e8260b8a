/**
 * kd-launch's public API. `launch()` does what the CLI does; the rest is what worker programs and
 * tooling need to speak the same types.
 */
export { JobFailedError, LaunchError } from '../launcher/errors.ts';
export type { Failure, LaunchEvent } from '../launcher/events.ts';
export {
  type LaunchHandle,
  type LaunchOptions,
  type LaunchResult,
  launch,
} from '../launcher/launch.ts';
export type { Plan } from '../launcher/plan.ts';
export {
  type CollectiveOptions,
  type Collectives,
  type Rank,
  type ReduceOp,
  type ReduceOptions,
  shardRange,
  type WireDtype,
} from './comm/types.ts';
export type { BatchPlan } from './config/batch.ts';
export { ConfigError, type ConfigIssue } from './config/errors.ts';
export { loadJobFile, parseJob } from './config/load.ts';
export type { JobInput, ParsedJob } from './config/schema.ts';
export type { Dataset, Sample } from './data/dataset.ts';
export { Engine, type EngineOptions, type MicroBatch, type StepStats } from './engine/engine.ts';
export { LossScaleDivergedError, LossScaler, type LossScalerOptions } from './engine/loss-scaler.ts';
export { estimateMemory } from './engine/memory-estimate.ts';
export {
  type Block,
  type BlockOutput,
  countParams,
  type ForwardMode,
  forwardBlocks,
  type Net,
  type NetOutput,
  netParams,
  type ParamSpec,
} from './engine/net.ts';
export {
  type AffineQuantization,
  dequantizeWeights,
  type QuantizedWeights,
  quantizeWeights,
  type WeightQuantization,
} from './engine/quantization.ts';
export type { MemoryReport, ZeroStage } from './engine/zero.ts';
export { ZeroShards } from './engine/zero-shards.ts';
export { buildNet } from './models/build.ts';
export { type OnnxExport, writeOnnx } from './models/onnx/export.ts';
export { layersToOnnx, OnnxExportError, type OnnxQuantization } from './models/onnx/from-layers.ts';
export { CrossEntropy, softmaxCrossEntropy } from './objectives/cross-entropy.ts';
export * as distill from './objectives/distill/index.ts';
export type { Objective, ObjectiveBatch, Prepared } from './objectives/objective.ts';
export { Timeline } from './trace/timeline.ts';
export type { Progress, WorkerContext, WorkerMain } from './trainer/context.ts';
export { type PreparedRun, type PrepareOptions, prepare, type StepBatch } from './trainer/prepare.ts';
