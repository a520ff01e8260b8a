import type { JobStagesReport } from '../src/trainer/job-stages.ts';
import type { AllReduceBenchLine } from './bench-allreduce.ts';
import { describeFailure, type LaunchEvent } from './events.ts';
import { formatPlan } from './plan.ts';
import { formatDiagnosis } from './watchdog.ts';

/** Renders a plain table: a header row, a rule, right-aligned numbers. */
export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length)));
  const fmt = (r: string[]) =>
    r.map((v, c) => (c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('  ');
  return [fmt(cells[0]), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(fmt)].join('\n');
}

function isBenchLine(d: unknown): d is AllReduceBenchLine {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'bench';
}

function isJobStages(d: unknown): d is JobStagesReport {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'stages';
}

/** Bytes as KiB / MiB with three significant digits. */
function fmtBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toPrecision(3)} MiB`;
  return `${(n / 1024).toPrecision(3)} KiB`;
}

/**
 * A staged job's comparison table: one row per stage, accuracy as mean ± sample std over its seeds (each seed's
 * accuracy listed after), parameters, size on disk, inference throughput on one rank, training time per run.
 */
export function jobStagesTable(r: JobStagesReport): string {
  const pct = (v: number) => (v * 100).toFixed(2);
  const rows: (string | number)[][] = [
    [
      'stage',
      'model',
      'objective',
      'seeds',
      'test acc %',
      'per seed',
      'params',
      'size',
      'infer/s',
      'train s',
    ],
    ...r.rows.map((row) => [
      row.stage,
      row.model,
      row.objective,
      row.seeds.length,
      row.seeds.length > 1 ? `${pct(row.accuracy_mean)} ± ${pct(row.accuracy_std)}` : pct(row.accuracy_mean),
      row.accuracies.map(pct).join(' '),
      row.parameters,
      fmtBytes(row.size_bytes),
      Math.round(row.inference_samples_per_s),
      row.train_s.toFixed(1),
    ]),
  ];
  const teachers = r.rows.filter((row) => row.teachers !== '').map((row) => `${row.stage} ← ${row.teachers}`);
  return [
    table(rows),
    ...(teachers.length > 0 ? [`teachers: ${teachers.join('; ')}`] : []),
    `${r.job} on ${r.world} workers, models in ${r.output_root}, ${r.wall_s.toFixed(1)} s`,
  ].join('\n');
}

function isSummary(d: unknown): d is { kind: 'summary' } & Record<string, unknown> {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'summary';
}

/** Integers as they are; others with four significant digits (no 2212.2724 samples/s). */
const fmtNum = (v: unknown) =>
  typeof v === 'number' ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) : String(v);

/**
 * Turns launcher events into what a person reads: the plan, rank-prefixed worker output, a progress line,
 * benchmark rows as they arrive, the summary table, and the failure with its stderr tail.
 */
export class HumanRenderer {
  private benchHeaderShown = false;
  private lastProgressPrint = 0;

  constructor(
    private readonly out: (line: string) => void,
    private readonly progress: ((line: string) => void) | undefined,
  ) {}

  render(e: LaunchEvent): void {
    switch (e.type) {
      case 'plan':
        this.out(formatPlan(e.plan));
        break;
      case 'rendezvous':
        this.out(`rendezvous listening on ${e.address}`);
        break;
      case 'joined':
        this.out(`all ${e.world} workers joined`);
        break;
      case 'refused':
        this.out(`rendezvous refused ${e.peer}: ${e.why}${e.count > 1 ? ` (${e.count} refusals)` : ''}`);
        break;
      case 'log':
        if (e.line.length > 0) this.out(`[rank ${e.rank}] ${e.line}`);
        break;
      case 'progress':
        if (e.rank === 0) this.showProgress(e.step, e.totalSteps, e.metrics);
        break;
      case 'report':
        if (isBenchLine(e.data)) this.benchRow(e.data);
        else if (isJobStages(e.data)) this.out(`\n${jobStagesTable(e.data)}`);
        else if (isSummary(e.data)) {
          const rows = Object.entries(e.data).filter(([k]) => k !== 'kind');
          this.out(`\n${table([['summary', 'value'], ...rows.map(([k, v]) => [k, fmtNum(v)])])}`);
        }
        break;
      case 'trace':
        this.out(
          `timeline of ${e.ranks}/${e.world} ranks (${e.spans} spans) written to ${e.path}: open it in https://ui.perfetto.dev or chrome://tracing`,
        );
        break;
      case 'failure': {
        const f = e.failure;
        if (f.cause) break; // the watchdog's diagnosis said it, with its table
        this.out(`kd-launch: ${describeFailure(f)}`);
        if (f.stderrTail.length > 0) {
          this.out(`last stderr lines of rank ${f.rank}:`);
          for (const l of f.stderrTail) this.out(`  ${l}`);
        }
        break;
      }
      case 'diagnosis':
        this.progress?.('');
        this.out(`kd-launch: ${e.diagnosis.headline}`);
        this.out(formatDiagnosis(e.diagnosis));
        if (e.path) this.out(`flight recorder of every rank written to ${e.path}`);
        break;
      case 'warning':
        this.out(e.message);
        break;
      case 'restart':
        this.progress?.('');
        this.out(
          `kd-launch: restarting the job (restart ${e.round} of ${e.maxRestarts}) after: ${e.reason}; training resumes from the newest verified checkpoint`,
        );
        break;
      case 'done':
        this.progress?.('');
        this.out(
          e.ok
            ? `done in ${(e.wallMs / 1000).toFixed(1)} s`
            : `job failed after ${(e.wallMs / 1000).toFixed(1)} s`,
        );
        break;
      case 'worker-started':
      case 'worker-exited':
        break;
    }
  }

  private showProgress(step: number, total: number, metrics: Record<string, number>): void {
    const now = Date.now();
    if (now - this.lastProgressPrint < 200 && step < total) return;
    this.lastProgressPrint = now;
    const width = 30;
    const filled = Math.round((width * step) / Math.max(total, 1));
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    const m = Object.entries(metrics)
      .map(([k, v]) => `${k} ${fmtNum(v)}`)
      .join('  ');
    this.progress?.(`${bar} ${step}/${total}  ${m}`);
  }

  private benchRow(d: AllReduceBenchLine): void {
    const cols = [
      'bytes',
      'dtype',
      'world',
      'iters',
      'time_ms',
      'algbw_GB/s',
      'busbw_GB/s',
      'p2p_GB/s',
      'busbw/p2p',
      'p2p_cores',
      'ar_cores',
      'fp32_ms',
      'x_fp32',
    ];
    const ratio = d.p2p_gbps ? (d.busbw_gbps / d.p2p_gbps).toFixed(2) : '-';
    const row = [
      d.bytes,
      d.dtype,
      d.world,
      d.iters,
      d.time_ms,
      d.algbw_gbps,
      d.busbw_gbps,
      d.p2p_gbps ?? '-',
      ratio,
      d.p2p_cores ?? '-',
      d.allreduce_cores,
      d.fp32_time_ms ?? '-',
      d.vs_fp32 ?? '-',
    ];
    if (!this.benchHeaderShown) {
      this.benchHeaderShown = true;
      this.out(cols.map((c) => c.padStart(12)).join(''));
    }
    this.out(row.map((v) => String(v).padStart(12)).join(''));
  }
}
