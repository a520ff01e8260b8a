/**
 * What a training run reports as it goes, beside the end summary: rank 0 sends each as a `ctx.report`, and the
 * launcher turns them into typed events (`step`, `eval`, `stage`), the live progress bars, `metrics.jsonl`, the
 * TensorBoard event files and the HTML report.
 */

/** Which run of a multi-stage job a record belongs to; absent for a job without `stages:`. */
export interface RunLabel {
  stage: string;
  /** The run's seed, for a stage with `seeds:`. */
  seed?: number;
  /** This run's position among the job's runs (1-based) and how many there are. */
  run: number;
  runs: number;
}

/**
 * One optimizer step, as rank 0 saw it (the loss is every rank's mean); steps are recorded at most ten a second
 * (record-pacer.ts), `loss` and `grad_norm` then the means over the steps since the previous record.
 */
export interface StepRecord {
  kind: 'step';
  label?: RunLabel;
  step: number;
  total_steps: number;
  /** Counted from 1. */
  epoch: number;
  epochs: number;
  loss: number;
  lr: number;
  /** Global L2 norm of the averaged gradient, before clipping. */
  grad_norm: number;
  /** fp16 only: the loss scale this step's backward used, and the steps skipped on overflow so far. */
  loss_scale?: number;
  skipped?: number;
  /** Training samples per second over all ranks since this run's first step. */
  samples_per_s: number;
  /** Time in collectives over this step's time, on rank 0. */
  comm_fraction: number;
  /** Rank 0's resident memory after the step. */
  rss_bytes: number;
  /** Seconds since the Unix epoch. */
  time: number;
}

/** An evaluation of the test set: every `eval.every_steps` and at the end. */
export interface EvalRecord {
  kind: 'eval';
  label?: RunLabel;
  step: number;
  total_steps: number;
  accuracy: number;
  samples: number;
  time: number;
}

/** The end of one run of a multi-stage job. */
export interface StageRecord {
  kind: 'stage';
  label: RunLabel;
  accuracy: number;
  parameters: number;
  train_s: number;
  /** Where the run's model was written. */
  model_dir: string | undefined;
  time: number;
}

export type RunRecord = StepRecord | EvalRecord | StageRecord;

export function isRunRecord(d: unknown): d is RunRecord {
  const kind = (d as { kind?: unknown } | null)?.kind;
  return typeof d === 'object' && d !== null && (kind === 'step' || kind === 'eval' || kind === 'stage');
}
