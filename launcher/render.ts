import { basename, isAbsolute, relative } from 'node:path';
import type { JobStagesReport } from '../src/trainer/job-stages.ts';
import { accuracyAfter, rungsOf, type SearchTrial } from '../src/trainer/search-trials.ts';
import type { PipelineSummary } from '../src/trainer/summary.ts';
import type { AllReduceBenchLine } from './bench-allreduce.ts';
import { describeFailure, type Failure, type LaunchEvent, type ResumePoint } from './events.ts';
import { formatPlan } from './plan.ts';
import { type Bar, ProgressTracker, runName, thousands } from './progress.ts';
import type { Display } from './progress-display.ts';
import { formatDiagnosis } from './watchdog.ts';

/** Renders a plain table: a header row, a rule, the `left` columns left-aligned and the others (numbers) right. */
export function table(rows: (string | number)[][], left: number[] = [0]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((v, c) => (left.includes(c) ? v.padEnd(widths[c]) : v.padStart(widths[c])))
      .join('  ')
      .trimEnd();
  return [fmt(cells[0]), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(fmt)].join('\n');
}

function isBenchLine(d: unknown): d is AllReduceBenchLine {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'bench';
}

function isJobStages(d: unknown): d is JobStagesReport {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'stages';
}

function isSummary(d: unknown): d is PipelineSummary {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'summary';
}

/** Each rank's memory figures: the summary table and the report show them, not a line each. */
function isMemory(d: unknown): boolean {
  return typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'memory';
}

/** A script's own `ctx.report(value)`, on one line: an object's fields as `key value`, anything else as JSON. */
export function reportText(d: unknown): string {
  if (typeof d !== 'object' || d === null || Array.isArray(d)) return JSON.stringify(d) ?? String(d);
  return Object.entries(d)
    .map(
      ([k, v]) => `${k} ${typeof v === 'number' ? fmtNum(v) : typeof v === 'string' ? v : JSON.stringify(v)}`,
    )
    .join(', ');
}

/** A share as a percentage, the unit left to the column or the row. */
const pct = (v: number, digits = 2) => (v * 100).toFixed(digits);
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(2);
/** Integers as they are; others with four significant digits (no 2212.2724). */
const fmtNum = (v: unknown) =>
  typeof v === 'number' ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) : String(v);

/** A path as the user would type it: relative to where kd-launch runs, when it lies below. */
export function shortPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}

/**
 * A staged job's comparison table: one row per stage, accuracy as mean ± sample std over its seeds (each seed's
 * accuracy listed after), parameters, size on disk, inference throughput on one rank, training time per run.
 */
export function jobStagesTable(r: JobStagesReport): string {
  // The non-zero column only where some stage prunes.
  const pruned = r.rows.some((row) => row.nonzero_parameters !== undefined);
  // The ONNX columns only where some stage writes model.onnx.
  const onnx = r.rows.some((row) => row.onnx_bytes !== undefined);
  const rows: (string | number)[][] = [
    [
      'stage',
      'model',
      'objective',
      'seeds',
      'test acc %',
      'per seed %',
      'params',
      ...(pruned ? ['non-zero'] : []),
      'size MiB',
      ...(onnx ? ['onnx MiB', 'onnx ms'] : []),
      'infer samples/s',
      'train s',
    ],
    ...r.rows.map((row) => [
      row.stage,
      row.model,
      row.objective,
      row.seeds.length,
      row.seeds.length > 1 ? `${pct(row.accuracy_mean)} ± ${pct(row.accuracy_std)}` : pct(row.accuracy_mean),
      row.accuracies.map((a) => pct(a)).join(' '),
      thousands(row.parameters),
      ...(pruned ? [row.nonzero_parameters === undefined ? '—' : thousands(row.nonzero_parameters)] : []),
      mib(row.size_bytes),
      ...(onnx
        ? [
            row.onnx_bytes === undefined ? '—' : mib(row.onnx_bytes),
            row.onnx_latency_ms === undefined ? '—' : row.onnx_latency_ms.toFixed(3),
          ]
        : []),
      thousands(row.inference_samples_per_s),
      row.train_s.toFixed(1),
    ]),
  ];
  const teachers = r.rows.filter((row) => row.teachers !== '').map((row) => `${row.stage} ← ${row.teachers}`);
  return [
    ...r.rows.flatMap((row) => (row.trials ? [trialsTable(row.stage, row.trials), ''] : [])),
    table(rows),
    ...(teachers.length > 0 ? [`teachers: ${teachers.join('; ')}`] : []),
    `${r.job} on ${r.world} workers, models in ${shortPath(r.output_root)}, ${r.wall_s.toFixed(1)} s`,
  ].join('\n');
}

/**
 * A search stage's trials: one row per candidate, its held-out accuracy after each rung it reached (a blank where it
 * was dropped), the winner marked.
 */
export function trialsTable(stage: string, trials: readonly SearchTrial[]): string {
  const rungs = rungsOf(trials);
  const rows: (string | number)[][] = [
    ['trial', 'model', 'params', ...rungs.map((steps) => `held-out % @${steps}`), ''],
    ...trials.map((t, i) => [
      i + 1,
      t.name,
      thousands(t.parameters),
      ...rungs.map((steps) => {
        const accuracy = accuracyAfter(t, steps);
        return accuracy === undefined ? '' : pct(accuracy);
      }),
      t.winner ? '← winner' : '',
    ]),
  ];
  return [
    `search ${stage}: successive halving, ${trials.length} trials`,
    table(rows, [1, rungs.length + 3]),
  ].join('\n');
}

/** One figure of the summary: its name, its value, its unit. */
type Figure = [name: string, value: string, unit: string];

/**
 * How the summary's figures read, in the order people look for them; `undefined` leaves a figure out where it
 * says nothing (no projections, no ZeRO-3 gathering). A field not named here is shown as it is, under its name.
 */
const FIGURES: {
  [K in keyof PipelineSummary]?: (
    v: NonNullable<PipelineSummary[K]>,
    s: PipelineSummary,
  ) => Figure | undefined;
} = {
  test_accuracy: (v) => ['test accuracy', pct(v), '%'],
  final_loss: (v) => ['final loss', v.toFixed(4), ''],
  steps: (v) => ['steps', thousands(v), ''],
  // As the bars count them, from 1: a run that ends inside its third epoch trained 3 (2.42 passes of the data).
  epochs: (v) => ['epochs', String(Math.ceil(v)), Number.isInteger(v) ? '' : `(${v.toFixed(2)} passes)`],
  train_batch_size: (v) => ['train batch size', thousands(v), 'samples'],
  world: (v) => ['workers', String(v), ''],
  backend: (v) => ['backend', v, ''],
  objective: (v) => ['objective', v, ''],
  model_parameters: (v) => ['model parameters', thousands(v), ''],
  nonzero_parameters: (v, s) => [
    'non-zero model parameters',
    thousands(v),
    `(${pct(1 - v / s.model_parameters, 1)} % zero)`,
  ],
  parameters: (v, s) =>
    v !== s.model_parameters ? ['trained parameters (with projections)', thousands(v), ''] : undefined,
  model_bytes: (v) => ['model size (fp32)', mib(v), 'MiB'],
  train_s: (v) => ['training time', v.toFixed(1), 's'],
  wall_s: (v) => ['wall time', v.toFixed(1), 's'],
  samples_per_s: (v) => ['training throughput', thousands(v), 'samples/s'],
  steady_samples_per_s: (v) => ['steady throughput (after warm-up)', thousands(v), 'samples/s'],
  comm_fraction: (v) => ['time in gradient collectives', pct(v, 1), '%'],
  inference_samples_per_s: (v) => ['inference throughput', thousands(v), 'samples/s'],
  onnx_bytes: (v) => ['model.onnx', mib(v), 'MiB'],
  onnx_latency_ms: (v) => ['onnxruntime latency (batch 1)', v.toFixed(3), 'ms'],
  loss_scale: (v) => ['loss scale', fmtNum(v), ''],
  skipped_steps: (v) => ['steps skipped on overflow', String(v), ''],
  zero_stage: (v) => ['ZeRO stage', String(v), ''],
  state_bytes_per_rank: (v) => ['model state per rank', mib(v), 'MiB'],
  state_bytes_estimate: (v) => ['model state per rank, estimated', mib(v), 'MiB'],
  params_bytes: (v) => ['parameters per rank', mib(v), 'MiB'],
  grads_bytes: (v) => ['gradients per rank', mib(v), 'MiB'],
  optimizer_bytes: (v) => ['optimizer state per rank', mib(v), 'MiB'],
  gathered_peak_bytes: (v) => (v > 0 ? ['gathered parameters at peak', mib(v), 'MiB'] : undefined),
  pipeline_stages: (v) => ['pipeline stages', String(v), ''],
  data_parallel: (v) => ['data-parallel replicas', String(v), ''],
  micro_batches: (v) => ['micro-batches per step', String(v), ''],
  pipeline_schedule: (v) => ['pipeline schedule', v, ''],
  bubble: (v) => ['pipeline bubble', pct(v, 1), '%'],
  bubble_ideal: (v) => ['pipeline bubble, ideal (P−1)/(M+P−1)', pct(v, 1), '%'],
  peak_live_activations: (v) => ['peak live micro-batches per stage', v.join(', '), ''],
};

type FigureOf = (v: unknown, s: PipelineSummary) => Figure | undefined;

/** The summary's fields that are no figure of the table: the model's directory is said below it. */
const NOT_FIGURES = new Set(['kind', 'model_dir', 'model_dir_bytes']);

/** A run's summary as a person reads it: one figure a row with its unit, then where the model went. */
export function summaryTable(s: PipelineSummary): string {
  const fields = s as unknown as Record<string, unknown>;
  const present = (k: string) => fields[k] !== undefined && !NOT_FIGURES.has(k);
  const known = Object.keys(FIGURES).filter(present);
  const others = Object.keys(fields).filter((k) => present(k) && !(k in FIGURES));
  const figures = [
    ...known.map((k) => (FIGURES[k as keyof PipelineSummary] as FigureOf)(fields[k], s)),
    ...others.map((k): Figure => [k.replaceAll('_', ' '), fmtNum(fields[k]), '']),
  ].filter((f) => f !== undefined);
  const where =
    s.model_dir !== undefined
      ? [`model written to ${shortPath(s.model_dir)} (${mib(s.model_dir_bytes)} MiB)`]
      : [];
  return [table([['summary', '', ''], ...figures], [0, 2]), ...where].join('\n');
}

/** What kd-launch was started with, quoted for a shell: what a rerun types. */
export function commandLine(argv: string[]): string {
  const [, script = 'kd-launch', ...args] = argv;
  const program = script.endsWith('.js') ? `node ${shortPath(script)}` : basename(script);
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`);
  return [program, ...args.map(quote)].join(' ');
}

/** A checkpoint interval to suggest: about a tenth of the run, one significant digit. */
const suggestedInterval = (total: number | undefined) =>
  total === undefined ? 'N' : String(Math.max(1, Number((total / 10).toPrecision(1))));

/** Where a stopped training job stands and what a rerun of `command` does: resume, or start over. */
export function resumeAdvice(how: string, r: ResumePoint, command: string): string {
  const of = r.totalSteps !== undefined ? `/${r.totalSteps}` : '';
  const where = r.reached !== undefined ? `${how} at step ${r.reached}${of}` : `${how} before its first step`;
  if (!r.checkpoint) {
    const why =
      r.checkpointEvery !== undefined
        ? `no checkpoint yet: the job writes its first at step ${r.checkpointEvery}`
        : `add checkpoint: {every_steps: ${suggestedInterval(r.totalSteps)}} to the job to resume`;
    return `${where}; a rerun starts from step 0 (${why}):\n  ${command}`;
  }
  const from = `to resume from step ${r.step} (checkpoint ${shortPath(r.checkpoint)})`;
  return r.set
    ? `${where}; rerun it with --set ${r.set} ${from}:\n  ${command} --set ${r.set}`
    : `${where}; rerun the same command ${from}:\n  ${command}`;
}

/** Stderr lines the renderer keeps per rank: as many as a failure's tail holds (launcher/agent.ts). */
const PRINTED_STDERR_LINES = 20;

/**
 * Turns launcher events into what a person reads: the plan, rank-prefixed worker output, progress bars (or lines),
 * evaluations and finished stages, benchmark rows as they arrive, the summary table, the failure, and where a
 * rerun resumes.
 */
export class HumanRenderer {
  private benchHeaderShown = false;
  /** The trainer runs: its step records draw the bars, not the sampled `ctx.progress` every program has. */
  private training = false;
  private interruptedBy: string | undefined;
  private readonly tracker = new ProgressTracker();
  /** Each rank's last stderr lines printed: a failure's stderr tail is printed only where they were not. */
  private readonly printedStderr = new Map<number, string[]>();

  /** `command`: the command line that started this launcher, for a rerun to copy. */
  constructor(
    private readonly display: Display,
    private readonly command: string,
  ) {}

  /** The user stopped the job (Ctrl-C, a SIGTERM): its end reads "interrupted", not "failed". */
  interrupted(signal: string): void {
    this.interruptedBy = signal;
    // Said at once: stopping the workers takes a moment, and in a terminal it moves the bars off the echoed ^C.
    this.display.line(`kd-launch: ${signal}: stopping the workers`);
  }

  render(e: LaunchEvent): void {
    const line = (text: string) => this.display.line(text);
    switch (e.type) {
      case 'plan':
        this.training = e.plan.program === 'train';
        this.display.block(formatPlan(e.plan));
        break;
      case 'rendezvous':
        line(`rendezvous listening on ${e.address}`);
        break;
      case 'joined':
        line(`all ${e.world} workers joined`);
        break;
      case 'refused':
        line(`rendezvous refused ${e.peer}: ${e.why}${e.count > 1 ? ` (${e.count} refusals)` : ''}`);
        break;
      case 'log':
        if (e.stream === 'stderr') this.rememberStderr(e.rank, e.line);
        if (e.line.length > 0) line(`[rank ${e.rank}] ${e.line}`);
        break;
      case 'progress':
        if (e.rank === 0 && !this.training) {
          this.showBar(this.tracker.progress(e.step, e.totalSteps, e.metrics, Date.now()));
        }
        break;
      case 'step':
        this.showBar(this.tracker.step(e.record, Date.now()));
        break;
      case 'eval': {
        const r = e.record;
        const run = r.label ? `${runName(r.label.stage, r.label.seed)}: ` : '';
        line(`${run}test accuracy ${pct(r.accuracy)} % at step ${r.step}/${r.total_steps}`);
        break;
      }
      case 'stage': {
        const r = e.record;
        const bar = this.tracker.finish(r.label, Date.now());
        if (bar) this.showBar(bar);
        const model = r.model_dir ? `, model in ${shortPath(r.model_dir)}` : '';
        line(
          `${runName(r.label.stage, r.label.seed)} done (run ${r.label.run}/${r.label.runs}): test accuracy ${pct(r.accuracy)} %, ${thousands(r.parameters)} parameters, trained in ${r.train_s.toFixed(1)} s${model}`,
        );
        break;
      }
      case 'report':
        if (isBenchLine(e.data)) this.benchRow(e.data);
        else if (isJobStages(e.data)) this.endTraining(jobStagesTable(e.data));
        else if (isSummary(e.data)) this.endTraining(summaryTable(e.data));
        else if (!isMemory(e.data)) line(`[rank ${e.rank}] report: ${reportText(e.data)}`);
        break;
      case 'trace':
        line(
          `timeline of ${e.ranks}/${e.world} ranks (${e.spans} spans) written to ${e.path}: open it in https://ui.perfetto.dev or chrome://tracing`,
        );
        break;
      case 'failure':
        // A watchdog's diagnosis said it already, with its table.
        if (!e.failure.cause) this.failure(e.failure);
        break;
      case 'diagnosis':
        line(`kd-launch: ${e.diagnosis.headline}`);
        this.display.block(formatDiagnosis(e.diagnosis));
        if (e.path) line(`flight recorder of every rank written to ${e.path}`);
        break;
      case 'warning':
        line(e.message);
        break;
      case 'restart':
        line(
          `kd-launch: restarting the job (restart ${e.round} of ${e.maxRestarts}) after: ${e.reason}; training resumes from the newest verified checkpoint`,
        );
        break;
      case 'done':
        this.done(e.ok, e.wallMs, e.resume, e.report);
        break;
      case 'worker-started':
      case 'worker-exited':
        break;
    }
  }

  private showBar(bar: Bar): void {
    this.display.progress(bar, this.tracker.bars);
  }

  /** The bars stay as they last were, and the job's closing table goes below them. */
  private endTraining(text: string): void {
    this.display.end();
    this.display.block(`\n${text}`);
  }

  private rememberStderr(rank: number, text: string): void {
    const lines = this.printedStderr.get(rank) ?? [];
    lines.push(text);
    if (lines.length > PRINTED_STDERR_LINES) lines.shift();
    this.printedStderr.set(rank, lines);
  }

  /** The failed rank, once; its stderr tail only where its log lines did not show it (another node's rank). */
  private failure(f: Failure): void {
    const printed = this.printedStderr.get(f.rank) ?? [];
    const unseen = f.stderrTail.filter((l) => l.length > 0 && !printed.includes(l));
    this.display.line(
      `kd-launch: ${describeFailure(f)}${unseen.length > 0 ? '; its last stderr lines:' : ''}`,
    );
    if (unseen.length > 0) this.display.block(unseen.map((l) => `  ${l}`).join('\n'));
  }

  private done(
    ok: boolean,
    wallMs: number,
    resume: ResumePoint | undefined,
    report: string | undefined,
  ): void {
    this.display.end();
    const s = (wallMs / 1000).toFixed(1);
    if (report) this.display.line(`report: ${shortPath(report)}`);
    if (ok) {
      this.display.line(`done in ${s} s`);
      return;
    }
    const how = this.interruptedBy ? 'interrupted' : 'failed';
    if (resume) this.display.line(resumeAdvice(how, resume, this.command));
    this.display.line(
      this.interruptedBy
        ? `job interrupted by ${this.interruptedBy} after ${s} s`
        : `job failed after ${s} s`,
    );
  }

  private benchRow(d: AllReduceBenchLine): void {
    const cols = [
      'bytes',
      'dtype',
      'world',
      'transport',
      'iters',
      'time_ms',
      'algbw_GB/s',
      'busbw_GB/s',
      'p2p_GB/s',
      'busbw/p2p',
      'memcpy_GB/s',
      'bus/memcpy',
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
      d.transport,
      d.iters,
      d.time_ms,
      d.algbw_gbps,
      d.busbw_gbps,
      d.p2p_gbps ?? '-',
      ratio,
      d.memcpy_gbps,
      (d.busbw_gbps / d.memcpy_gbps).toFixed(2),
      d.p2p_cores ?? '-',
      d.allreduce_cores,
      d.fp32_time_ms ?? '-',
      d.vs_fp32 ?? '-',
    ];
    if (!this.benchHeaderShown) {
      this.benchHeaderShown = true;
      this.display.block(cols.map((c) => c.padStart(12)).join(''));
    }
    this.display.block(row.map((v) => String(v).padStart(12)).join(''));
  }
}
