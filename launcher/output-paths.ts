/**
 * Every directory a run will write, checked before any worker starts: a job that trains for an hour and then
 * cannot save its model, or hangs at its first checkpoint, is refused at once instead, naming the key.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  rmdirSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { ConfigError } from '../src/config/errors.ts';
import { jobStageRunDir, jobStageRuns } from '../src/config/job-stages.ts';
import { fieldPosition } from '../src/config/load.ts';
import { checkpointDirOf, jobStagesRootOf, modelDirOf } from '../src/config/outputs.ts';
import type { ParsedJob } from '../src/config/schema.ts';
import { LaunchError } from './errors.ts';

/** A directory the run writes, and what names it: a job key, or a command-line option. */
export interface OutputDir {
  readonly dir: string;
  readonly key: string;
  readonly from: 'job' | 'option';
}

/** What a run writes where: the run directory, the model(s), the checkpoints, the trace. */
export interface RunOutputs {
  readonly runDir: string;
  /** The model directory; a multi-stage job's root of one directory per stage; undefined with `save: false`. */
  readonly model: string | undefined;
  readonly checkpoints: string | undefined;
  readonly trace: string | undefined;
}

export function runOutputs(
  job: ParsedJob,
  jobDir: string,
  runDir: string,
  traceFile: string | undefined,
): RunOutputs {
  return {
    runDir,
    model: job.stages ? jobStagesRootOf(job, jobDir, runDir) : modelDirOf(job, jobDir, runDir),
    checkpoints: checkpointDirOf(job, jobDir, runDir),
    trace: traceFile,
  };
}

/**
 * The directories to check on this node: node 0 writes the run directory, the model and the trace; every node's
 * ranks write their checkpoint files. A multi-stage job's stages may each name their own checkpoint directory.
 */
export function outputDirs(
  job: ParsedJob,
  outputs: RunOutputs,
  context: { jobDir: string; nodeRank: number; traceFromOption: boolean; runDirFromOption: boolean },
): OutputDir[] {
  const dirs: OutputDir[] = [];
  if (context.nodeRank === 0) {
    dirs.push({
      dir: outputs.runDir,
      key: '--run-dir',
      from: context.runDirFromOption ? 'option' : 'job',
    });
    if (outputs.model && job.output_dir) dirs.push({ dir: outputs.model, key: 'output_dir', from: 'job' });
    if (outputs.trace)
      dirs.push(
        context.traceFromOption
          ? { dir: dirname(outputs.trace), key: '--trace', from: 'option' }
          : { dir: dirname(outputs.trace), key: 'trace.path', from: 'job' },
      );
  }
  if (job.stages) {
    jobStageRuns(job).forEach((run) => {
      const dir = checkpointDirOf(run.job, context.jobDir, outputs.runDir);
      const own = job.stages?.[run.index]?.checkpoint !== undefined;
      if (dir)
        dirs.push({
          dir: join(dir, jobStageRunDir(run)),
          key: own ? `stages.${run.index}.checkpoint.dir` : 'checkpoint.dir',
          from: 'job',
        });
    });
  } else if (outputs.checkpoints) dirs.push({ dir: outputs.checkpoints, key: 'checkpoint.dir', from: 'job' });
  return dirs;
}

/**
 * Refuses the first directory that cannot be written, as a ConfigError naming its key (or a LaunchError naming
 * the option). A directory the job names but that the job's file leaves out (the run directory's defaults) is
 * the run directory's problem: it is reported as `--run-dir`.
 */
export function checkOutputDirs(dirs: readonly OutputDir[], file: string | undefined): void {
  const seen = new Set<string>();
  for (const d of dirs) {
    if (seen.has(d.dir)) continue;
    seen.add(d.dir);
    const why = probeWritable(d.dir);
    if (why === undefined) continue;
    if (d.from === 'option' || d.key === '--run-dir')
      throw new LaunchError(
        `${d.key} ${d.dir}: ${why}${d.key === '--run-dir' ? ' (give --run-dir DIR)' : ''}`,
      );
    throw new ConfigError(file ?? '<job>', [
      { path: d.key, ...fieldPosition(file, d.key), message: `${d.dir}: ${why}` },
    ]);
  }
}

/**
 * Whether a run can write in `dir`: it is created if missing, a probe file is created, written, fsynced and
 * removed, and the directories the probe created are removed again (the run creates them when it writes).
 * Returns why not, in words, or undefined.
 */
export function probeWritable(dir: string): string | undefined {
  const created = missingAncestors(dir);
  try {
    // One level at a time, outermost first: a recursive mkdir reports ENOENT for what is a read-only file system.
    for (const d of [...created].reverse()) mkdirSync(d);
    const probe = join(dir, `.kd-launch-probe-${process.pid}`);
    const fd = openSync(probe, 'w');
    try {
      writeSync(fd, 'kd-launch checks that this directory can be written\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
      unlinkSync(probe);
    }
    return undefined;
  } catch (err) {
    return describeWriteError(err as NodeJS.ErrnoException, dir);
  } finally {
    for (const d of created) {
      try {
        rmdirSync(d);
      } catch {
        // Not ours to remove any more (something wrote there meanwhile), or never made: either way, leave it.
      }
    }
  }
}

/** `dir` and its ancestors that do not exist yet, deepest first. */
function missingAncestors(dir: string): string[] {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d) && dirname(d) !== d; d = dirname(d)) missing.push(d);
  return missing;
}

/** Why a write failed, naming the path it failed at where that is not `dir` itself (a parent, the probe file). */
function describeWriteError(err: NodeJS.ErrnoException, dir: string): string {
  const at = err.path && err.path !== dir ? ` (${err.path})` : '';
  switch (err.code) {
    case 'EACCES':
    case 'EPERM':
      return `not writable: permission denied${at}`;
    case 'EROFS':
      return `not writable: a read-only file system${at}`;
    case 'EEXIST':
    case 'ENOTDIR':
      return `not a directory: a file is in the way${at}`;
    case 'ENOENT':
      return `cannot be created${at}`;
    case 'ENOSPC':
    case 'EDQUOT':
      return `no space left on the device${at}`;
    default:
      return `cannot be written: ${err.code ?? err.message}${at}`;
  }
}
