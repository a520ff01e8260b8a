/**
 * The pipeline bubble, measured: the pipeline training job at P = 2 (two worker processes) on a model whose two
 * stages take the same time, GPipe and 1F1B at M = 4 and 8, traced; from the trace, each rank's idle fraction over
 * each step's pipeline phase (first forward or receive of any stage to the last backward), beside the theory
 * (P−1)/(M+P−1), and the measured peak live activations per stage.
 *
 *   npm run bench:pipeline [-- --steps 15 --micro 512 --hidden2 448]
 *
 * Balance: stage 0 is block 0 (784→512), stage 1 blocks 1–2 (512→H→10). Stage 0 skips the input gradient, so
 * by FLOPs H = 576 would balance them (3 × 784·512 against 4 × (512·H + 10·H)); measured on the wasm backend
 * with micro-batches of 512, H = 448 (the default, `--hidden2`) gives equal stage times. The per-stage compute
 * time printed beside each figure shows how close they came in the run. Micro-batches of 512 keep the cost of
 * each activation's trip between the processes (on the critical path, which the theory ignores) small beside the
 * stage's compute.
 *
 * Equal stage times are not equal phases: stage 0's backward skips the input gradient and stage 1's does not, so
 * stage 1 waits on stage 0's forwards and stage 0 on stage 1's backwards, whatever H. (P−1)/(M+P−1) assumes neither
 * waits; the figure that does not is the schedule simulated with each stage's measured mean forward and backward
 * (`simulate`, no transfer time): "ideal for these stages". What is left above it is the runtime's own cost.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { launch } from '../launcher/launch.ts';
import { idealBubble, schedulePrograms, simulate } from '../src/pipeline/schedule.ts';
import { meanIdle, utilisation } from '../src/trace/bubble.ts';
import type { ChromeTrace, CompleteEvent } from '../src/trace/chrome-trace.ts';
import type { RankTrace, Span } from '../src/trace/timeline.ts';
import type { PipelineSummary } from '../src/trainer/summary.ts';

const argv = yargs(hideBin(process.argv))
  .option('steps', { type: 'number', default: 15, describe: 'optimizer steps per run' })
  .option('warmup', { type: 'number', default: 3, describe: 'first steps left out of the figures' })
  .option('micro', { type: 'number', default: 512, describe: 'samples per micro-batch' })
  .option('backend', { type: 'string', default: 'auto' })
  .option('hidden2', {
    type: 'number',
    default: 448,
    describe: 'width of the first block of stage 1: sets the balance of the two stages',
  })
  .strict()
  .parseSync();

const STAGES = 2;
/** What the bubble is measured over: the pipeline phase, without the closing barrier and the optimizer step. */
const PIPELINE = new Set(['forward', 'backward', 'send', 'recv']);

/** The trace file back into per-rank spans (already on one clock: epoch 0 for all). */
function rankTraces(trace: ChromeTrace): RankTrace[] {
  const byRank = new Map<number, Span[]>();
  for (const e of trace.traceEvents) {
    if (e.ph !== 'X') continue;
    const x = e as CompleteEvent;
    const step = x.args?.['step'];
    const span: Span = {
      name: x.name,
      cat: x.cat,
      start: x.ts / 1000,
      end: (x.ts + x.dur) / 1000,
      ...(typeof step === 'number' ? { step } : {}),
    };
    byRank.set(x.tid, [...(byRank.get(x.tid) ?? []), span]);
  }
  return [...byRank].map(([rank, spans]) => ({ rank, epochWallMs: 0, spans }));
}

interface Figure {
  bubble: number;
  perStageIdle: number[];
  perStageBusyMs: number[];
  stepMs: number;
  /** Each stage's mean forward and backward of one micro-batch (ms). */
  forwardMs: number[];
  backwardMs: number[];
}

/** Each stage's mean span of category `cat` over steps [from, to), in ms. */
function meanSpan(traces: RankTrace[], cat: string, from: number, to: number): number[] {
  return [...traces]
    .sort((a, b) => a.rank - b.rank)
    .map((t) => {
      const spans = t.spans.filter(
        (s) => s.cat === cat && s.step !== undefined && s.step >= from && s.step < to,
      );
      return spans.reduce((sum, s) => sum + s.end - s.start, 0) / Math.max(1, spans.length);
    });
}

function measure(traces: RankTrace[], from: number, to: number): Figure {
  const idle: number[] = [];
  const busy = new Array<number>(STAGES).fill(0);
  const perStage = new Array<number>(STAGES).fill(0);
  let window = 0;
  for (let step = from; step < to; step++) {
    const u = utilisation(traces, { include: (s) => s.step === step && PIPELINE.has(s.cat) });
    idle.push(meanIdle(u));
    for (const r of u) {
      busy[r.rank] += r.busyMs;
      perStage[r.rank] += r.idle;
    }
    window += u[0].busyMs + u[0].idleMs;
  }
  const n = to - from;
  return {
    bubble: idle.reduce((a, b) => a + b, 0) / n,
    perStageIdle: perStage.map((x) => x / n),
    perStageBusyMs: busy.map((x) => x / n),
    stepMs: window / n,
    forwardMs: meanSpan(traces, 'forward', from, to),
    backwardMs: meanSpan(traces, 'backward', from, to),
  };
}

async function run(schedule: 'gpipe' | '1f1b', m: number, dir: string) {
  const path = join(dir, `trace-${schedule}-${m}.json`);
  const job = {
    name: `bench-pipeline-${schedule}-${m}`,
    backend: argv.backend,
    seed: 1,
    model: { type: 'mlp', layers: [784, 512, argv.hidden2, 10], dropout: 0 },
    data: { dataset: 'mnist' },
    optimizer: { type: 'SGD', params: { lr: 0.01, momentum: 0.9 } },
    train_micro_batch_size_per_gpu: argv.micro,
    steps: argv.steps,
    steps_per_print: 1000,
    pipeline: { stages: STAGES, micro_batches: m, schedule, partition: [1] },
  };
  const { reports } = await launch(job, { nproc: STAGES, trace: { path } }).result;
  const summary = reports.find((r) => (r.data as { kind?: string }).kind === 'summary')
    ?.data as PipelineSummary;
  const trace = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
  return { summary, figure: measure(rankTraces(trace), argv.warmup, argv.steps) };
}

const dir = mkdtempSync(join(tmpdir(), 'kd-bench-pipe-'));
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
try {
  console.log(
    `pipeline bubble: P=${STAGES}, MLP 784-512-${argv.hidden2}-10 cut at block 1, micro-batch ${argv.micro}, steps ${argv.warmup}..${argv.steps - 1} of ${argv.steps}`,
  );
  for (const m of [4, 8]) {
    for (const schedule of ['gpipe', '1f1b'] as const) {
      const load = loadavg()[0];
      const { summary, figure: f } = await run(schedule, m, dir);
      const theory = idealBubble(STAGES, m);
      const ideal = simulate(schedulePrograms(schedule, STAGES, m), {
        forwardTime: f.forwardMs,
        backwardTime: f.backwardMs,
        semantics: 'buffered',
      }).bubble;
      const ms = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' / ');
      console.log(
        `${schedule.padEnd(5)} M=${m}  bubble ${pct(f.bubble)} (theory ${pct(theory)}, off by ${(f.bubble - theory).toFixed(3)};` +
          ` ideal for these stages ${pct(ideal)}, off by ${(f.bubble - ideal).toFixed(3)}: forward ${ms(f.forwardMs)} ms,` +
          ` backward ${ms(f.backwardMs)} ms per micro-batch)` +
          `  per stage idle ${f.perStageIdle.map(pct).join(' / ')}, compute ${f.perStageBusyMs.map((x) => x.toFixed(1)).join(' / ')} ms per step` +
          `  pipeline phase ${f.stepMs.toFixed(1)} ms` +
          `  peak live activations ${summary.peak_live_activations.join(' / ')}` +
          `  (job's own estimate ${pct(summary.bubble)}; backend ${summary.backend};` +
          ` load average ${load.toFixed(1)} → ${loadavg()[0].toFixed(1)} on ${cpus().length} cores)`,
      );
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
