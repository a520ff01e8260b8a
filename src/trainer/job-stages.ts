/**
 * A multi-stage job (src/config/job-stages.ts): every stage and seed trained in order by the same workers, each model
 * written to `<output_dir or the run directory>/<stage>[/seed-N]`, then one comparison table reported by rank 0.
 */
import { join } from 'node:path';
import { resumeNote } from '../config/batch.ts';
import { type JobStageRun, jobStageRunDir, jobStageRuns, teacherRun } from '../config/job-stages.ts';
import { checkpointDirOf, jobStagesRootOf } from '../config/outputs.ts';
import { describeTeacher, type TeacherSpec } from '../config/teachers.ts';
import { type LoadedData, loadDataset } from '../data/load.ts';
import { runBatch } from './checkpoints.ts';
import type { WorkerContext } from './context.ts';
import type { RunLabel, StageRecord } from './records.ts';
import { searchStudent } from './search.ts';
import type { SearchTrial } from './search-trials.ts';
import type { RunSummary } from './summary.ts';
import { runKey, trainModel } from './train.ts';

/** One stage's line of the comparison table: figures over its seeds. */
export interface JobStageRow {
  stage: string;
  model: string;
  objective: string;
  /** The teachers, e.g. `stage teacher`; empty for cross-entropy. */
  teachers: string;
  seeds: number[];
  /** Test accuracy of each seed's model, in seed order. */
  accuracies: number[];
  accuracy_mean: number;
  /** Sample standard deviation over the seeds (n − 1); 0 for one seed. */
  accuracy_std: number;
  parameters: number;
  /** A pruned stage: its model's parameters that are not zero (mean over the seeds). */
  nonzero_parameters?: number;
  /** Bytes of the stage's model directory (its first seed's; every seed's is the same size). */
  size_bytes: number;
  /** `onnx: true`: bytes of model.onnx (the first seed's), and its batch-1 latency in ms, mean over the seeds. */
  onnx_bytes?: number;
  onnx_latency_ms?: number;
  /** Batched inference over the test set on one rank, samples per second, mean over the seeds. */
  inference_samples_per_s: number;
  /** Training time of one run, mean over the seeds, in seconds. */
  train_s: number;
  steps: number;
  /** A search stage: its candidates, the rungs each trained in, and which won (the stage's model). */
  trials?: SearchTrial[];
}

/** What rank 0 reports at the end of a staged job; the launcher prints it as the comparison table. */
export interface JobStagesReport {
  kind: 'stages';
  job: string;
  world: number;
  rows: JobStageRow[];
  /** Where the models are. */
  output_root: string;
  wall_s: number;
}

export async function runJobStages(ctx: WorkerContext): Promise<JobStagesReport> {
  const start = performance.now();
  const runs = jobStageRuns(ctx.job);
  const root = jobStagesRootOf(ctx.job, ctx.jobDir, ctx.runDir);
  const dirOf = (run: JobStageRun) => join(root, jobStageRunDir(run));
  const datasets = new Map<string, LoadedData>();
  const done: StageRunDone[] = [];
  for (const run of runs) {
    const { job } = run;
    if (!job.data) throw new Error(`stage ${run.stage} has no data section`);
    const key = JSON.stringify(job.data);
    let data = datasets.get(key);
    if (!data) {
      data = loadDataset(job.data, ctx.jobDir);
      datasets.set(key, data);
    }
    const label = `stage ${run.stage}${run.seedIndex !== undefined ? ` seed ${run.seed}` : ''}`;
    const runLabel: RunLabel = {
      stage: run.stage,
      ...(run.seedIndex !== undefined ? { seed: run.seed } : {}),
      run: runs.indexOf(run) + 1,
      runs: runs.length,
    };
    if (ctx.rank === 0) ctx.log(`── ${label} (${runLabel.run}/${runLabel.runs})`);
    const jobCheckpoints = checkpointDirOf(job, ctx.jobDir, ctx.runDir);
    const checkpointDir = jobCheckpoints && join(jobCheckpoints, jobStageRunDir(run));
    // The worker spec carries the first stage's plan only: each run resolves its own, as the launcher checked it.
    const { batch } = runBatch(job, ctx.world, checkpointDir, ctx.jobDir);
    const note = resumeNote(batch);
    if (note && ctx.rank === 0) ctx.log(`${label}: ${note}`);
    const cacheDir = join(root, 'cache');
    const stageKey = runKey(jobStageRunDir(run).replace('/', '-'));
    const stageModelDir = (t: Extract<TeacherSpec, { stage: string }>) => {
      const teacher = teacherRun(runs, t);
      if (!teacher || runs.indexOf(teacher) >= runs.indexOf(run)) {
        throw new Error(`${label}: ${describeTeacher(t)} has not run before it`);
      }
      return dirOf(teacher);
    };
    // A search stage trains its winner as its model.
    const search = job.search
      ? await searchStudent(ctx, {
          job,
          batch,
          data,
          cacheDir,
          runKey: stageKey,
          stageModelDir,
          label: runLabel,
        })
      : undefined;
    const summary = await trainModel(ctx, {
      job: search ? { ...job, model: search.winner, search: undefined } : job,
      batch,
      outputDir: dirOf(run),
      checkpointDir,
      cacheDir,
      runKey: stageKey,
      ...(run.from ? { startFrom: { ...run.from, model: dirOf(run.from.model) } } : {}),
      stageModelDir,
      data,
      label: runLabel,
    });
    if (ctx.rank === 0) {
      const record: StageRecord = {
        kind: 'stage',
        label: runLabel,
        accuracy: summary.test_accuracy,
        parameters: summary.parameters,
        train_s: summary.train_s,
        model_dir: summary.model_dir_bytes > 0 ? dirOf(run) : undefined,
        time: Date.now() / 1000,
      };
      ctx.report(record);
    }
    done.push({ run, summary, ...(search ? { trials: search.trials } : {}) });
  }
  const report: JobStagesReport = {
    kind: 'stages',
    job: ctx.job.name,
    world: ctx.world,
    rows: (ctx.job.stages ?? []).map((stage) => jobStageRow(stage.name, done)),
    output_root: root,
    wall_s: (performance.now() - start) / 1000,
  };
  if (ctx.rank === 0) ctx.report(report);
  return report;
}

/** A stage run that has finished: its figures, and a search stage's trials. */
interface StageRunDone {
  readonly run: JobStageRun;
  readonly summary: RunSummary;
  readonly trials?: SearchTrial[];
}

function jobStageRow(name: string, done: readonly StageRunDone[]): JobStageRow {
  const mine = done.filter((d) => d.run.stage === name);
  const first = mine[0];
  const accuracies = mine.map((d) => d.summary.test_accuracy);
  const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const m = mean(accuracies);
  const std =
    accuracies.length > 1
      ? Math.sqrt(accuracies.reduce((s, a) => s + (a - m) ** 2, 0) / (accuracies.length - 1))
      : 0;
  const { quantization: q, clustering, low_rank: lowRank } = first.run.job;
  const layers = first.run.from?.layers;
  // A quantized model says its weights' bits, a clustered one its values per tensor, a low-rank one its rank (or
  // energy), a reduced one the layers it kept; post-training quantization trains on no objective.
  const how = q
    ? ` int${q.bits}`
    : clustering
      ? ` k=${clustering.clusters}`
      : lowRank
        ? ` ${lowRank.rank !== undefined ? `r=${lowRank.rank}` : `e=${lowRank.energy}`}`
        : layers
          ? ` layers=${layers.join(',')}`
          : '';
  return {
    stage: name,
    model: `${first.run.job.model?.type ?? '?'}${how}`,
    objective: q?.mode === 'ptq' ? 'ptq' : first.summary.objective,
    teachers: q?.mode === 'ptq' ? '' : (first.run.job.teachers ?? []).map(describeTeacher).join(', '),
    seeds: mine.map((d) => d.run.seed),
    accuracies,
    accuracy_mean: m,
    accuracy_std: std,
    parameters: first.summary.model_parameters,
    ...nonZeroOf(mine.map((d) => d.summary)),
    size_bytes: first.summary.model_dir_bytes,
    ...onnxOf(mine.map((d) => d.summary)),
    inference_samples_per_s: mean(mine.map((d) => d.summary.inference_samples_per_s)),
    train_s: mean(mine.map((d) => d.summary.train_s)),
    steps: first.summary.steps,
    ...(first.trials ? { trials: first.trials } : {}),
  };
}

/** The seeds' mean non-zero count, for a pruned stage. */
function nonZeroOf(summaries: readonly RunSummary[]): { nonzero_parameters?: number } {
  const counts = summaries.flatMap((s) => (s.nonzero_parameters === undefined ? [] : [s.nonzero_parameters]));
  if (counts.length === 0) return {};
  return { nonzero_parameters: Math.round(counts.reduce((a, b) => a + b, 0) / counts.length) };
}

/** The stage's model.onnx: its size, and its latency as the seeds' mean (absent where none measured it). */
function onnxOf(summaries: readonly RunSummary[]): { onnx_bytes?: number; onnx_latency_ms?: number } {
  const first = summaries[0];
  if (first?.onnx_bytes === undefined) return {};
  const latencies = summaries.flatMap((s) => (s.onnx_latency_ms === undefined ? [] : [s.onnx_latency_ms]));
  return {
    onnx_bytes: first.onnx_bytes,
    ...(latencies.length > 0
      ? { onnx_latency_ms: latencies.reduce((a, b) => a + b, 0) / latencies.length }
      : {}),
  };
}
