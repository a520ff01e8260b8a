import type { Collectives } from '../comm/types.ts';
import type { BatchPlan } from '../config/batch.ts';
import type { ParsedJob } from '../config/schema.ts';
import type { Timeline } from '../trace/timeline.ts';

/** Progress a worker publishes on its heartbeat; the launcher turns it into a progress line. */
export interface Progress {
  step: number;
  totalSteps: number;
  /** Free-form scalar metrics for the progress line (loss, lr, samples_per_s…). */
  metrics: Record<string, number>;
}

/** What a worker program (built-in job or user script) receives: torchrun's view of the world. */
export interface WorkerContext {
  readonly rank: number;
  readonly world: number;
  readonly localRank: number;
  readonly nodeRank: number;
  readonly restartCount: number;
  readonly job: ParsedJob;
  /** Present for training jobs: the resolved batch arithmetic. */
  readonly batch: BatchPlan | undefined;
  /** The world process group. */
  readonly pg: Collectives;
  /** `job.args`, for user scripts. */
  readonly args: Record<string, unknown>;
  /** Directory of the job file, for resolving relative paths. */
  readonly jobDir: string;
  /**
   * The run directory (absolute): the trained model, checkpoints, metrics and report go there unless the job
   * places them; a script may keep its own files there too (Accelerate's `project_dir`).
   */
  readonly runDir: string;
  /** Aborted when the job is torn down (a peer failed, the launcher was interrupted). */
  readonly signal: AbortSignal;
  /** Sends a JSON-serialisable value to the launcher: it becomes a `report` event on the launch handle. */
  report(data: unknown): void;
  progress(p: Progress): void;
  /** A line for the launcher's log, prefixed with this rank. */
  log(message: string): void;
  /**
   * This rank's timeline: spans recorded here end up in the job's trace file when the job has `trace` on; when it
   * is off, the calls do nothing and cost next to nothing, so instrumentation can stay in place.
   */
  readonly timeline: Timeline;
}

/** A worker program: `export async function main(ctx: WorkerContext)` in a user script. */
export type WorkerMain = (ctx: WorkerContext) => Promise<unknown>;
