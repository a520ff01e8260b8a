/**
 * A run's HTML report, `<runDir>/report.html`, built from its `metrics.jsonl`: one self-contained file that opens
 * from disk with no network. Chart.js's code (read from node_modules now, its license header kept), the charts'
 * data (JSON) and the CSS are inlined; a Content-Security-Policy forbids every fetch, so nothing can slip in later.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import type { MetricsLine } from './metrics-lines.ts';
import { lastOf, linesOf, readMetrics, type SkippedLine } from './metrics-read.ts';
import {
  type ChartSpec,
  memoryByRank,
  memoryCharts,
  stagesChart,
  timelineChart,
  trainingCharts,
} from './report-charts.ts';
import { escapeHtml, scriptJson } from './report-format.ts';
import { configYaml, header, runsTable, skippedNote, stagesTable, summaryTable } from './report-sections.ts';

const METRICS_FILE = 'metrics.jsonl';
export const REPORT_FILE = 'report.html';

/** A part of the page: undefined parts (their lines absent) and parts with neither text nor charts are left out. */
interface Section {
  id: string;
  title: string;
  body?: string;
  charts?: ChartSpec[];
}

function sections(lines: readonly MetricsLine[], skipped: readonly SkippedLine[]): Section[] {
  const stages = lastOf(lines, 'stages');
  const timeline = lastOf(lines, 'timeline');
  return [
    { id: 'skipped', title: 'Lines left out', body: skippedNote(skipped) },
    { id: 'training', title: 'Training', charts: trainingCharts(lines) },
    {
      id: 'stages',
      title: 'Job stages',
      body: stages && stagesTable(stages),
      charts: stages && [stagesChart(stages)],
    },
    { id: 'runs', title: 'Finished runs', body: runsTable(lines) },
    { id: 'memory', title: 'Memory', charts: memoryCharts(memoryByRank(lines)) },
    { id: 'pipeline', title: 'Pipeline', charts: timeline && [timelineChart(timeline)] },
    { id: 'summary', title: 'Summary', body: summaryTable(lines) },
    { id: 'config', title: 'Resolved config', body: configYaml(lines) },
  ].filter((s) => s.body !== undefined || (s.charts?.length ?? 0) > 0);
}

function figure(chart: ChartSpec): string {
  return `<figure><figcaption>${escapeHtml(chart.title)}</figcaption><div class="chart"><canvas data-chart="${escapeHtml(chart.id)}"></canvas></div></figure>`;
}

function sectionHtml(s: Section): string {
  const charts = s.charts?.length ? `<div class="charts">${s.charts.map(figure).join('')}</div>` : '';
  return `<section id="${s.id}"><h2>${escapeHtml(s.title)}</h2>${s.body ?? ''}${charts}</section>`;
}

/** Inside a <script>, the library's code must not end the element early (it does not today; a later version might). */
function inlineScript(code: string): string {
  return code.replace(/<\/script/gi, '<\\/script').replace(/^\/\/# sourceMappingURL=.*$/m, '');
}

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; padding: 0 16px; color: #111827; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #e5e7eb; }
.status { font-size: 13px; padding: 2px 8px; border-radius: 4px; vertical-align: middle; }
.status.ok { background: #dcfce7; color: #166534; } .status.failed { background: #fee2e2; color: #991b1b; }
.status.unfinished { background: #fef3c7; color: #92400e; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; } dt { color: #6b7280; }
dd { margin: 0; overflow-wrap: anywhere; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 4px; }
.chart { position: relative; height: 280px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px; border-bottom: 1px solid #e5e7eb; text-align: left; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; } .table { overflow-x: auto; }
pre.config { background: #f9fafb; border: 1px solid #e5e7eb; padding: 12px; overflow: auto; }
#skipped { color: #92400e; }
`;

/** No fetch of any kind: the report is what the file holds. */
const CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";

/** Draws every chart in the page's data; Chart.js is the global its UMD build defines. */
const DRAW = `for (const c of JSON.parse(document.getElementById('report-charts').textContent))
  new Chart(document.querySelector('canvas[data-chart="' + c.id + '"]'), c.config);`;

/** The report page for these lines; `chartJs` is Chart.js's UMD build (only inlined when there is a chart). */
export function reportHtml(
  lines: MetricsLine[],
  chartJs: string,
  skipped: readonly SkippedLine[] = [],
): string {
  const parts = sections(lines, skipped);
  const charts = parts.flatMap((s) => s.charts ?? []);
  const job = lastOf(lines, 'run')?.job ?? 'unknown job';
  const scripts = charts.length
    ? `<script type="application/json" id="report-charts">${scriptJson(charts)}</script>
<script>${inlineScript(chartJs)}</script>
<script>${DRAW}</script>`
    : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kd-launch report: ${escapeHtml(job)}</title>
<style>${CSS}</style>
</head>
<body>
${header(lines)}
${parts.map(sectionHtml).join('\n')}
${scripts}
</body>
</html>
`;
}

const require = createRequire(import.meta.url);

/** Chart.js's UMD build, from wherever the package resolves (its `exports` name only the ESM and CJS entries). */
function chartJsSource(): string {
  return readFileSync(join(dirname(require.resolve('chart.js')), 'chart.umd.js'), 'utf8');
}

/** The run directory's metrics file, or why there is none (one line, for `kd-launch report`). */
export class ReportError extends Error {}

export interface WrittenReport {
  path: string;
  /** Lines of metrics.jsonl left out (a line cut short, an unknown type). */
  skipped: number;
  steps: number;
  evals: number;
}

/** (Re)writes `<runDir>/report.html` from `<runDir>/metrics.jsonl`; works on a run that stopped anywhere. */
export function writeReport(runDir: string): WrittenReport {
  const dir = resolve(runDir);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new ReportError(`${dir}: no such run directory`);
  const metrics = join(dir, METRICS_FILE);
  if (!existsSync(metrics)) throw new ReportError(`${dir}: no ${METRICS_FILE} (not a run directory?)`);
  const { lines, skipped } = readMetrics(metrics);
  const path = join(dir, REPORT_FILE);
  writeFileSync(path, reportHtml(lines, chartJsSource(), skipped));
  return {
    path,
    skipped: skipped.length,
    steps: linesOf(lines, 'step').length,
    evals: linesOf(lines, 'eval').length,
  };
}
