import type { EvalRecord, StageRecord, StepRecord } from '../src/trainer/records.ts';
import type { Plan } from './plan.ts';
import type { Diagnosis } from './watchdog.ts';

/** Why a job stopped: the first rank that failed, as torchrun reports it. */
export interface Failure {
  /** What the watchdog found, when it stopped the job (a stopped rank, a lost node, a hang): the headline. */
  cause?: string;
  rank: number;
  nodeRank: number;
  exitCode: number | null;
  signal: string | null;
  lastCollective: string;
  stderrTail: string[];
  /** What its last heartbeat said of its memory, and whether it ran out of it (the OOM killer, wasm's heap). */
  memory?: { lastRssBytes: number | undefined; outOfMemory: boolean };
}

/** Everything the launcher observes, in order. The CLI prints these; `--json` prints each as a line. */
export type LaunchEvent =
  | { type: 'plan'; plan: Plan }
  | { type: 'rendezvous'; address: string }
  | { type: 'worker-started'; rank: number; pid: number }
  | { type: 'joined'; world: number }
  /**
   * The master refused a connection or a message: `peer` is the address (or the RPC), `count` how many were
   * refused since the last such event (they are reported at most once a second).
   */
  | { type: 'refused'; peer: string; why: string; count: number }
  | { type: 'log'; rank: number; stream: 'stdout' | 'stderr' | 'ctx'; line: string }
  | { type: 'progress'; rank: number; step: number; totalSteps: number; metrics: Record<string, number> }
  | { type: 'report'; rank: number; data: unknown }
  /** Rank 0's record of each optimizer step (a training job's; `progress` is any program's, sampled). */
  | { type: 'step'; record: StepRecord }
  /** An evaluation of the test set: every `eval.every_steps` and at the end of each run. */
  | { type: 'eval'; record: EvalRecord }
  /** One run of a multi-stage job ended (a stage, or one seed of it). */
  | { type: 'stage'; record: StageRecord }
  | { type: 'worker-exited'; rank: number; exitCode: number | null; signal: string | null }
  | { type: 'failure'; failure: Failure }
  /** The watchdog's finding, with every rank's row; the same as JSON at `path`. A failure follows. */
  | { type: 'diagnosis'; diagnosis: Diagnosis; path: string | undefined }
  /** Something a person should know that does not stop the job (a straggler). */
  | { type: 'warning'; message: string }
  /** The job starts over after a failure: round `round` of at most `maxRestarts`, from the newest checkpoint. */
  | { type: 'restart'; round: number; maxRestarts: number; reason: string }
  /** The job's timeline was written: `ranks` of the world sent theirs (all, unless some were lost). */
  | { type: 'trace'; path: string; ranks: number; world: number; spans: number }
  /**
   * The job ended. `resume`: where a rerun of the same command continues (a failed or interrupted training job):
   * the newest verified checkpoint's step and directory, or step 0 when there is none.
   */
  | {
      type: 'done';
      ok: boolean;
      wallMs: number;
      runDir?: string;
      /** The run's report.html (node 0 of a training run). */
      report?: string;
      resume?: ResumePoint;
    };

/** Where a rerun of a stopped job starts. */
export interface ResumePoint {
  /** The last step the job trained before it stopped, when it trained any. */
  reached: number | undefined;
  step: number;
  totalSteps: number | undefined;
  /** The checkpoint it resumes from; undefined: it starts from step 0 (the job has no checkpoint yet). */
  checkpoint: string | undefined;
  /** The job's `checkpoint.every_steps`; undefined: the job writes no checkpoints. */
  checkpointEvery: number | undefined;
  /** What the rerun's command line needs, e.g. `resume=auto` (for `--set`) when the job does not say `resume`. */
  set?: string;
}

export function describeFailure(f: Failure): string {
  if (f.cause) return f.cause;
  const rss = f.memory?.lastRssBytes && `its last RSS ${(f.memory.lastRssBytes / 2 ** 20).toFixed(0)} MiB`;
  const how = f.memory?.outOfMemory
    ? `ran out of memory (${f.signal ? `killed by ${f.signal}` : `exit code ${f.exitCode}`}${rss ? `; ${rss}` : ''})`
    : f.signal
      ? `was killed by ${f.signal}${f.signal === 'SIGKILL' && rss ? ` (${rss})` : ''}`
      : `exited with code ${f.exitCode}`;
  const where = f.lastCollective ? `; last collective: ${f.lastCollective}` : '';
  return `rank ${f.rank} (node ${f.nodeRank}) ${how}${where}`;
}
