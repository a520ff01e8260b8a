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
export type { Progress, WorkerContext, WorkerMain } from '../launcher/worker-context.ts';
export {
  asRank,
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
