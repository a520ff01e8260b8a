/**
 * The lines of a run's `metrics.jsonl`: one JSON object per line, each with its `type`. The launcher writes them
 * as the run goes (run-files.ts); the HTML report and `kd-launch report RUN_DIR` read them back.
 */
import type { MemoryReport } from '../../src/engine/zero.ts';
import type { JobStageRow } from '../../src/trainer/job-stages.ts';
import type { EvalRecord, StageRecord, StepRecord } from '../../src/trainer/records.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';
import type { ResumePoint } from '../events.ts';

/** The first line: what ran, where, with which resolved config. */
export interface RunLine {
  type: 'run';
  job: string;
  /** The job file, absolute; undefined for a job given as an object. */
  job_file: string | undefined;
  world: number;
  nodes: number;
  /** ISO 8601. */
  started: string;
  /** The job as validated, defaults filled in (ParsedJob). */
  config: unknown;
  /** `--dry-run`'s estimate of each rank's model states at the job's ZeRO stage; none for pipelines. */
  memory_estimate: MemoryReport | undefined;
}

type Line<R, T extends string> = { type: T } & Omit<R, 'kind'>;
export type StepLine = Line<StepRecord, 'step'>;
export type EvalLine = Line<EvalRecord, 'eval'>;
export type StageLine = Line<StageRecord, 'stage'>;

/** A rank's model states as it measured them at the end of a run, beside the estimate and its peak RSS. */
export interface MemoryLine {
  type: 'memory';
  rank: number;
  pipeline_stage?: number;
  zero_stage: number;
  params_bytes: number;
  grads_bytes: number;
  optimizer_bytes: number;
  /** params + grads + optimizer. */
  state_bytes: number;
  /** The estimate of state_bytes for this rank; undefined for pipelines. */
  estimate_bytes: number | undefined;
  /** The most resident memory the rank's process had, from its heartbeats. */
  peak_rss_bytes: number | undefined;
}

export type SummaryLine = Line<RunSummary, 'summary'>;

/** A multi-stage job's comparison table. */
export interface StagesLine {
  type: 'stages';
  rows: JobStageRow[];
  output_root: string;
}

/** A traced run's busy and idle share per rank (src/trace/bubble.ts). */
export interface TimelineLine {
  type: 'timeline';
  ranks: { rank: number; busy: number; idle: number }[];
}

/** The last line: how the run ended, and where a rerun resumes. */
export interface EndLine {
  type: 'end';
  ok: boolean;
  wall_s: number;
  time: number;
  resume: ResumePoint | undefined;
}

export type MetricsLine =
  | RunLine
  | StepLine
  | EvalLine
  | StageLine
  | MemoryLine
  | SummaryLine
  | StagesLine
  | TimelineLine
  | EndLine;
