/**
 * The HTML report's charts as Chart.js configurations: plain JSON (no callbacks), inlined in the page and drawn
 * there by the inlined Chart.js. Each chart is one canvas, named by its id (`data-chart`). Animations are off, so
 * a chart is drawn once, the same every time.
 */
import type { ChartConfiguration } from 'chart.js';
import type { RunLabel } from '../../src/trainer/records.ts';
import type { MemoryLine, MetricsLine, StagesLine, TimelineLine } from './metrics-lines.ts';
import { linesOf } from './metrics-read.ts';
import { MIB, runName } from './report-format.ts';

export interface ChartSpec {
  id: string;
  title: string;
  config: ChartConfiguration;
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
const color = (i: number) => PALETTE[i % PALETTE.length];

const OPTIONS = { animation: false, responsive: true, maintainAspectRatio: false } as const;
/** Beyond this many points a curve is drawn as a line alone: markers would hide it. */
const MARKED_POINTS = 60;

const axisTitle = (text: string) => ({ display: true, text });

/** One curve: a run's values over its steps (null: a NaN or infinite value, drawn as a gap). */
interface Series {
  name: string;
  points: { x: number; y: number | null }[];
}

/** One series per run of a multi-stage job (named `stage` / `stage seed N`), or one named `metric`. */
function seriesByRun<R extends { label?: RunLabel; step: number }>(
  records: readonly R[],
  metric: string,
  value: (r: R) => number | null,
): Series[] {
  const byRun = new Map<number, Series>();
  for (const r of records) {
    const run = r.label?.run ?? 0;
    let series = byRun.get(run);
    if (!series) {
      series = { name: r.label ? runName(r.label) : metric, points: [] };
      byRun.set(run, series);
    }
    series.points.push({ x: r.step, y: value(r) });
  }
  return [...byRun.values()];
}

function lineChart(id: string, title: string, yTitle: string, series: readonly Series[]): ChartSpec {
  return {
    id,
    title,
    config: {
      type: 'line',
      data: {
        datasets: series.map((s, i) => ({
          label: s.name,
          data: s.points,
          borderColor: color(i),
          backgroundColor: color(i),
          borderWidth: 1.5,
          pointRadius: s.points.length > MARKED_POINTS ? 0 : 2,
        })),
      },
      options: {
        ...OPTIONS,
        // One run's curve is named by the chart's title already.
        plugins: { legend: { display: series.length > 1 } },
        scales: {
          x: { type: 'linear', title: axisTitle('step') },
          y: { title: axisTitle(yTitle) },
        },
      },
    },
  };
}

interface Bars {
  name: string;
  values: number[];
}

function barChart(
  id: string,
  title: string,
  yTitle: string,
  labels: string[],
  bars: readonly Bars[],
  stacked = false,
): ChartSpec {
  return {
    id,
    title,
    config: {
      type: 'bar',
      data: {
        labels,
        datasets: bars.map((b, i) => ({ label: b.name, data: b.values, backgroundColor: color(i) })),
      },
      options: {
        ...OPTIONS,
        scales: {
          x: { stacked },
          y: { stacked, beginAtZero: true, title: axisTitle(yTitle) },
        },
      },
    },
  };
}

/** Loss, learning rate, eval accuracy, throughput and communication share over the steps. */
export function trainingCharts(lines: readonly MetricsLine[]): ChartSpec[] {
  const steps = linesOf(lines, 'step');
  const evals = linesOf(lines, 'eval');
  const charts: ChartSpec[] = [];
  if (steps.length > 0) {
    charts.push(
      lineChart(
        'loss',
        'Training loss',
        'loss',
        seriesByRun(steps, 'loss', (s) => s.loss),
      ),
      lineChart(
        'lr',
        'Learning rate',
        'learning rate',
        seriesByRun(steps, 'learning rate', (s) => s.lr),
      ),
    );
  }
  if (evals.length > 0) {
    const accuracy = seriesByRun(evals, 'accuracy', (e) => e.accuracy * 100);
    charts.push(lineChart('accuracy', 'Eval accuracy', 'accuracy (%)', accuracy));
  }
  if (steps.length > 0) {
    const throughput = seriesByRun(steps, 'throughput', (s) => s.samples_per_s);
    const comm = seriesByRun(steps, 'communication', (s) => s.comm_fraction * 100);
    charts.push(
      lineChart('throughput', 'Throughput', 'samples/s', throughput),
      lineChart('comm', 'Communication share', 'time in collectives (% of step)', comm),
    );
  }
  return charts;
}

/** Each rank's last memory line (a multi-stage job reports once per run; the last run's stands). */
export function memoryByRank(lines: readonly MetricsLine[]): MemoryLine[] {
  const byRank = new Map<number, MemoryLine>();
  for (const m of linesOf(lines, 'memory')) byRank.set(m.rank, m);
  return [...byRank.values()].sort((a, b) => a.rank - b.rank);
}

function rankName(m: MemoryLine): string {
  return m.pipeline_stage === undefined
    ? `rank ${m.rank}`
    : `rank ${m.rank} (pipeline stage ${m.pipeline_stage})`;
}

const inMiB = (bytes: number | undefined) => (bytes ?? 0) / MIB;

/** Model states measured beside the estimate, and peak RSS: apart, as RSS is orders of magnitude larger. */
export function memoryCharts(ranks: readonly MemoryLine[]): ChartSpec[] {
  if (ranks.length === 0) return [];
  const labels = ranks.map(rankName);
  const states: Bars[] = [{ name: 'measured', values: ranks.map((m) => inMiB(m.state_bytes)) }];
  if (ranks.some((m) => m.estimate_bytes !== undefined)) {
    states.push({ name: 'estimate', values: ranks.map((m) => inMiB(m.estimate_bytes)) });
  }
  const charts = [barChart('memory-states', 'Model states per rank', 'MiB', labels, states)];
  if (ranks.some((m) => m.peak_rss_bytes !== undefined)) {
    const rss = [{ name: 'peak RSS', values: ranks.map((m) => inMiB(m.peak_rss_bytes)) }];
    charts.push(barChart('memory-rss', 'Peak resident memory per rank', 'MiB', labels, rss));
  }
  return charts;
}

export function timelineChart(timeline: TimelineLine): ChartSpec {
  const ranks = [...timeline.ranks].sort((a, b) => a.rank - b.rank);
  const bars = [
    { name: 'busy', values: ranks.map((r) => r.busy * 100) },
    { name: 'idle', values: ranks.map((r) => r.idle * 100) },
  ];
  const labels = ranks.map((r) => `rank ${r.rank}`);
  return barChart('timeline', 'Pipeline busy and idle per rank', '% of time', labels, bars, true);
}

export function stagesChart(stages: StagesLine): ChartSpec {
  const labels = stages.rows.map((r) => r.stage);
  const bars = [{ name: 'accuracy, mean over seeds', values: stages.rows.map((r) => r.accuracy_mean * 100) }];
  return barChart('stages-accuracy', 'Test accuracy per stage', 'accuracy (%)', labels, bars);
}
