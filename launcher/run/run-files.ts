/**
 * A run's metrics on disk, as Accelerate and DeepSpeed users expect them: node 0 writes `metrics.jsonl` (the lines
 * of metrics-lines.ts) and TensorBoard event files under `tb/` (`tb/<stage>[/seed-N]` per run of a multi-stage
 * job) from the launcher's events, as they arrive, so a run killed mid-way keeps what it had. A restarted round
 * repeats steps from its checkpoint: they are written again (every line has its time).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ParsedJob } from '../../src/config/schema.ts';
import type { MemoryReport } from '../../src/engine/zero.ts';
import { utilisation } from '../../src/trace/bubble.ts';
import type { RankTrace } from '../../src/trace/timeline.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import type { RunLabel, StepRecord } from '../../src/trainer/records.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';
import type { LaunchEvent } from '../events.ts';
import type { Plan } from '../plan.ts';
import { AppendFile } from './append-file.ts';
import type { MetricsLine } from './metrics-lines.ts';
import { EventFileWriter, type Scalar } from './tfevents.ts';

export interface RunFilesOptions {
  runDir: string;
  plan: Plan;
  /** The job as the workers run it (the WorkerSpec's). */
  job: ParsedJob;
  /** A write failed: the message for one `warning` event. Nothing more is written. */
  warn: (message: string) => void;
}

/** What every rank reports of its model states at the end of a run (src/trainer/train.ts). */
interface RankMemoryReport extends MemoryReport {
  kind: 'memory';
  rank: number;
  zero_stage: number;
  pipeline_stage?: number;
}

export class RunFiles {
  private metrics: AppendFile | undefined;
  /** One event file per TensorBoard directory, opened at its first scalars. */
  private readonly eventFiles = new Map<string, EventFileWriter>();
  private readonly peakRss = new Map<number, number>();
  /** A write failed, or the files are closed. */
  private stopped = false;

  constructor(private readonly o: RunFilesOptions) {
    this.write(() => {
      mkdirSync(o.runDir, { recursive: true });
      this.metrics = new AppendFile(join(o.runDir, 'metrics.jsonl'));
    });
    const { plan } = o;
    this.line({
      type: 'run',
      job: plan.jobName,
      job_file: plan.jobFile,
      world: plan.world,
      nodes: plan.nnodes,
      started: new Date().toISOString(),
      config: o.job,
      memory_estimate: this.estimate(plan.memory?.stage),
    });
  }

  /** Every event of the run, in order. */
  event(e: LaunchEvent): void {
    switch (e.type) {
      case 'step':
        this.line({ type: 'step', ...withoutKind(e.record) });
        this.scalars(e.record.label, e.record.step, e.record.time, stepScalars(e.record));
        return;
      case 'eval':
        this.line({ type: 'eval', ...withoutKind(e.record) });
        this.scalars(e.record.label, e.record.step, e.record.time, [
          { tag: 'eval/accuracy', value: e.record.accuracy },
        ]);
        return;
      case 'stage':
        this.line({ type: 'stage', ...withoutKind(e.record) });
        return;
      case 'report':
        this.report(e.data);
        return;
      case 'restart':
        // The next round's ranks are new processes: their peak is their own.
        this.peakRss.clear();
        return;
      case 'done':
        this.line({
          type: 'end',
          ok: e.ok,
          wall_s: e.wallMs / 1000,
          time: Date.now() / 1000,
          resume: e.resume,
        });
        return;
    }
  }

  /** A rank's heartbeat: its resident memory now, for the peak its `memory` line carries. */
  beat(rank: number, rssBytes: number): void {
    this.peakRss.set(rank, Math.max(rssBytes, this.peakRss.get(rank) ?? 0));
  }

  /** A traced run's timelines, every rank's that arrived. */
  timeline(traces: readonly RankTrace[]): void {
    if (traces.length === 0) return;
    this.line({
      type: 'timeline',
      ranks: utilisation(traces).map(({ rank, busy, idle }) => ({ rank, busy, idle })),
    });
  }

  /** fsyncs and closes every file; nothing is written after. */
  close(): void {
    this.write(() => {
      for (const f of this.files()) f.close();
    });
    this.stopped = true;
  }

  private report(data: unknown): void {
    const kind = (data as { kind?: unknown } | null)?.kind;
    if (kind === 'memory') this.memory(data as RankMemoryReport);
    else if (kind === 'summary') this.line({ type: 'summary', ...withoutKind(data as RunSummary) });
    else if (kind === 'stages') {
      const { rows, output_root } = data as JobStagesReport;
      this.line({ type: 'stages', rows, output_root });
    }
  }

  private memory(m: RankMemoryReport): void {
    const estimate = m.pipeline_stage === undefined ? this.estimate(m.zero_stage) : undefined;
    this.line({
      type: 'memory',
      rank: m.rank,
      ...(m.pipeline_stage !== undefined ? { pipeline_stage: m.pipeline_stage } : {}),
      zero_stage: m.zero_stage,
      params_bytes: m.params,
      grads_bytes: m.grads,
      optimizer_bytes: m.optimizer,
      state_bytes: stateBytes(m),
      estimate_bytes: estimate && stateBytes(estimate),
      peak_rss_bytes: this.peakRss.get(m.rank),
    });
  }

  /**
   * The plan's estimate at a ZeRO stage. A multi-stage job's stages may train other models than the job's
   * top level, which is all the plan estimates: it has none.
   */
  private estimate(zeroStage: number | undefined): MemoryReport | undefined {
    if (zeroStage === undefined || this.o.job.stages !== undefined) return undefined;
    return this.o.plan.memory?.perStage[zeroStage];
  }

  private line(l: MetricsLine): void {
    this.write(() => this.metrics?.append(`${JSON.stringify(l)}\n`));
  }

  private scalars(label: RunLabel | undefined, step: number, time: number, scalars: readonly Scalar[]): void {
    this.write(() => {
      const dir = tensorBoardDir(join(this.o.runDir, 'tb'), label);
      let file = this.eventFiles.get(dir);
      if (!file) {
        file = new EventFileWriter(dir);
        this.eventFiles.set(dir, file);
      }
      file.scalars(step, time, scalars);
    });
  }

  private files(): { close(): void }[] {
    return [...(this.metrics ? [this.metrics] : []), ...this.eventFiles.values()];
  }

  /** A full disk must not stop the job: the first failure is reported once, and writing stops. */
  private write(what: () => void): void {
    if (this.stopped) return;
    try {
      what();
    } catch (err) {
      this.stopped = true;
      for (const f of this.files()) {
        try {
          f.close();
        } catch {
          // Already failing: the warning below says so.
        }
      }
      this.o.warn(
        `warning: could not write the run's metrics in ${this.o.runDir}: ${(err as Error).message}; no more are written`,
      );
    }
  }
}

function withoutKind<R extends { kind: string }>(record: R): Omit<R, 'kind'> {
  const { kind: _, ...rest } = record;
  return rest;
}

function stateBytes(m: MemoryReport): number {
  return m.params + m.grads + m.optimizer;
}

/** A run of a multi-stage job gets the directory its model gets (jobStageRunDir); a single run, `tb/` itself. */
function tensorBoardDir(root: string, label: RunLabel | undefined): string {
  if (!label) return root;
  return label.seed === undefined ? join(root, label.stage) : join(root, label.stage, `seed-${label.seed}`);
}

function stepScalars(r: StepRecord): Scalar[] {
  const scalars: Scalar[] = [
    { tag: 'train/loss', value: r.loss },
    { tag: 'train/lr', value: r.lr },
    { tag: 'train/grad_norm', value: r.grad_norm },
    { tag: 'train/samples_per_s', value: r.samples_per_s },
    { tag: 'train/comm_fraction', value: r.comm_fraction },
    { tag: 'train/rss_mib', value: r.rss_bytes / 2 ** 20 },
  ];
  // fp16 runs only.
  if (r.loss_scale !== undefined) scalars.push({ tag: 'train/loss_scale', value: r.loss_scale });
  if (r.skipped !== undefined) scalars.push({ tag: 'train/skipped', value: r.skipped });
  return scalars;
}
