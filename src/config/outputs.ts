/**
 * Where a job's outputs go. Every run has a run directory (`--run-dir`, default `runs/<job name>` in the working
 * directory) that holds whatever the job does not place itself: the trained model, the checkpoints, the trace,
 * the metrics and the report. A path the job gives is relative to the job file's directory, as every path of a
 * job file is. The launcher checks these paths before any worker starts and the workers write to the same ones:
 * both ask these functions.
 */
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { JobBase, ParsedJob } from './schema.ts';

/** Longest job name a run directory takes whole; a longer one is cut and told apart by a hash of the whole. */
const MAX_RUN_NAME = 80;

/** The run directory of a job: `runDir` as given (relative to the working directory), else `runs/<name>`. */
export function runDirOf(jobName: string, runDir: string | undefined): string {
  if (runDir !== undefined) return resolve(runDir);
  const safe = jobName.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+/, '_');
  const name =
    safe.length <= MAX_RUN_NAME
      ? safe
      : `${safe.slice(0, MAX_RUN_NAME)}-${createHash('sha256').update(jobName).digest('hex').slice(0, 8)}`;
  return resolve('runs', name);
}

/** Where a single-model job writes its trained model; undefined with `save: false`. */
export function modelDirOf(job: JobBase, jobDir: string, runDir: string): string | undefined {
  if (!job.save) return undefined;
  return job.output_dir ? resolve(jobDir, job.output_dir) : join(runDir, 'model');
}

/** Where a multi-stage job writes its stages' models (`<root>/<stage>[/seed-N]`) and teacher caches. */
export function jobStagesRootOf(job: ParsedJob, jobDir: string, runDir: string): string {
  return job.output_dir ? resolve(jobDir, job.output_dir) : runDir;
}

/** Where the job's checkpoints go, when it checkpoints. */
export function checkpointDirOf(job: JobBase, jobDir: string, runDir: string): string | undefined {
  if (!job.checkpoint) return undefined;
  return job.checkpoint.dir ? resolve(jobDir, job.checkpoint.dir) : join(runDir, 'checkpoints');
}

/** Where the job's timeline goes when `trace:` is on. */
export function traceFileOf(job: ParsedJob, jobDir: string, runDir: string): string | undefined {
  if (!job.trace.enabled) return undefined;
  return job.trace.path ? resolve(jobDir, job.trace.path) : join(runDir, 'trace.json');
}
