/**
 * The HTML report's parts other than its charts: the header, the tables and the config. Every string that comes
 * from metrics.jsonl is escaped here; a part whose lines are absent is undefined, so the page leaves it out.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import { stringify } from 'yaml';
import { accuracyAfter, rungsOf, type SearchTrial } from '../../src/trainer/search-trials.ts';
import type { EndLine, MetricsLine, RunLine, StagesLine } from './metrics-lines.ts';
import { lastOf, linesOf, type SkippedLine } from './metrics-read.ts';
import {
  escapeHtml,
  fieldText,
  mib,
  percent,
  plain,
  runName,
  samplesPerSecond,
  seconds,
} from './report-format.ts';

/** Cells are HTML already (escaped by the caller where they hold text from the file). */
function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const tr = (cells: readonly string[], tag: 'th' | 'td') =>
    `<tr>${cells.map((c) => `<${tag}>${c}</${tag}>`).join('')}</tr>`;
  return `<div class="table"><table><thead>${tr(head, 'th')}</thead><tbody>${rows.map((r) => tr(r, 'td')).join('')}</tbody></table></div>`;
}

function definitions(items: readonly [string, string][]): string {
  return `<dl>${items.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>`;
}

function status(end: EndLine | undefined): string {
  if (!end) return 'did not finish: no end line (the launcher was stopped before it wrote one)';
  if (end.ok) return 'ok';
  const resume = end.resume;
  if (!resume) return 'failed';
  const from = resume.checkpoint ? `from ${resume.checkpoint}` : 'from scratch (no checkpoint yet)';
  return `failed; a rerun resumes at step ${resume.step} ${from}`;
}

/** Without an end line, the time from the start to the last record is a lower bound. */
function wallTime(lines: readonly MetricsLine[], run: RunLine | undefined, end: EndLine | undefined): string {
  if (end) return seconds(end.wall_s);
  const times = lines.flatMap((l) => ('time' in l && typeof l.time === 'number' ? [l.time] : []));
  if (!run || times.length === 0) return '—';
  return `at least ${seconds(Math.max(...times) - Date.parse(run.started) / 1000)}`;
}

interface OutputConfig {
  save?: unknown;
  output_dir?: unknown;
  stages?: unknown;
}

/** Where the trained model was written (src/config/outputs.ts decides it: output_dir, or the run directory). */
function modelPlace(
  run: RunLine | undefined,
  stages: StagesLine | undefined,
  end: EndLine | undefined,
): string {
  if (stages) return `${stages.output_root}, one directory per stage`;
  if (!end?.ok) return 'not written: the run did not finish';
  const config = (run?.config ?? {}) as OutputConfig;
  if (config.save === false) return 'not written (save: false)';
  const perStage = Array.isArray(config.stages) ? ', one directory per stage' : '';
  if (typeof config.output_dir !== 'string') {
    return perStage ? `this report's directory${perStage}` : "model/ in this report's directory";
  }
  const dir = config.output_dir;
  if (isAbsolute(dir)) return dir + perStage;
  if (run?.job_file) return resolve(dirname(run.job_file), dir) + perStage;
  return `${dir} (relative to the launcher's working directory)${perStage}`;
}

export function header(lines: readonly MetricsLine[]): string {
  const run = lastOf(lines, 'run');
  const end = lastOf(lines, 'end');
  const items: [string, string][] = [];
  if (run) {
    if (run.job_file) items.push(['job file', run.job_file]);
    items.push(['world', `${run.world} ranks on ${run.nodes} node${run.nodes === 1 ? '' : 's'}`]);
    items.push(['started', run.started]);
  }
  items.push(['wall time', wallTime(lines, run, end)], ['status', status(end)]);
  items.push(['model', modelPlace(run, lastOf(lines, 'stages'), end)]);
  const job = run ? escapeHtml(run.job) : 'unknown job (no run line)';
  const state = end ? (end.ok ? 'ok' : 'failed') : 'unfinished';
  return `<header><h1>kd-launch run <span class="job">${job}</span> <span class="status ${state}">${state}</span></h1>${definitions(items)}</header>`;
}

/** How many skipped lines are listed one by one; the rest are counted. */
const LISTED_SKIPS = 10;

export function skippedNote(skipped: readonly SkippedLine[]): string | undefined {
  if (skipped.length === 0) return undefined;
  const items = skipped.slice(0, LISTED_SKIPS).map((s) => `<li>line ${s.line}: ${escapeHtml(s.reason)}</li>`);
  if (skipped.length > LISTED_SKIPS) items.push(`<li>and ${skipped.length - LISTED_SKIPS} more</li>`);
  const n = skipped.length;
  return `<p>${n} line${n === 1 ? '' : 's'} of metrics.jsonl could not be read and ${n === 1 ? 'is' : 'are'} left out of this report:</p><ul>${items.join('')}</ul>`;
}

export function stagesTable(stages: StagesLine): string {
  const pruned = stages.rows.some((r) => r.nonzero_parameters !== undefined);
  const onnx = stages.rows.some((r) => r.onnx_bytes !== undefined);
  const rows = stages.rows.map((r) => [
    escapeHtml(r.stage),
    escapeHtml(r.model),
    escapeHtml(r.objective),
    escapeHtml(r.teachers || '—'),
    escapeHtml(r.seeds.join(', ')),
    `${percent(r.accuracy_mean)} ± ${percent(r.accuracy_std)}`,
    r.accuracies.map(percent).join(', '),
    plain(r.parameters),
    ...(pruned ? [r.nonzero_parameters === undefined ? '—' : plain(r.nonzero_parameters)] : []),
    mib(r.size_bytes),
    ...(onnx
      ? [
          r.onnx_bytes === undefined ? '—' : mib(r.onnx_bytes),
          r.onnx_latency_ms === undefined ? '—' : `${r.onnx_latency_ms.toFixed(3)} ms`,
        ]
      : []),
    samplesPerSecond(r.inference_samples_per_s),
    seconds(r.train_s),
    plain(r.steps),
  ]);
  const head = [
    'stage',
    'model',
    'objective',
    'teachers',
    'seeds',
    'test accuracy (mean ± std)',
    'per seed',
    'parameters',
    ...(pruned ? ['non-zero'] : []),
    'size',
    ...(onnx ? ['model.onnx', 'onnxruntime latency (batch 1)'] : []),
    'inference',
    'train (per run)',
    'steps',
  ];
  const searches = stages.rows.flatMap((r) => (r.trials ? [trialsTable(r.stage, r.trials)] : []));
  return `<p>Models in ${escapeHtml(stages.output_root)}.</p>${table(head, rows)}${searches.join('')}`;
}

/** A search stage's trials: each candidate's held-out accuracy after each rung it reached, the winner marked. */
function trialsTable(stage: string, trials: readonly SearchTrial[]): string {
  const rungs = rungsOf(trials);
  const rows = trials.map((t, i) => [
    plain(i + 1),
    escapeHtml(t.name),
    plain(t.parameters),
    ...rungs.map((steps) => {
      const accuracy = accuracyAfter(t, steps);
      return accuracy === undefined ? '' : percent(accuracy);
    }),
    t.winner ? 'winner' : '',
  ]);
  const head = [
    'trial',
    'model',
    'parameters',
    ...rungs.map((steps) => `held out, ${plain(steps)} steps`),
    '',
  ];
  return `<h3>Search ${escapeHtml(stage)}: ${trials.length} trials, successive halving</h3>${table(head, rows)}`;
}

/** The runs of a multi-stage job that finished, with where each model went (there even when the job failed). */
export function runsTable(lines: readonly MetricsLine[]): string | undefined {
  const runs = linesOf(lines, 'stage');
  if (runs.length === 0) return undefined;
  const rows = runs.map((r) => [
    `${r.label.run}/${r.label.runs}`,
    escapeHtml(runName(r.label)),
    percent(r.accuracy),
    plain(r.parameters),
    seconds(r.train_s),
    escapeHtml(r.model_dir ?? 'not written'),
  ]);
  return table(['run', 'name', 'test accuracy', 'parameters', 'train', 'model'], rows);
}

export function summaryTable(lines: readonly MetricsLine[]): string | undefined {
  const summary = lastOf(lines, 'summary');
  if (!summary) return undefined;
  const rows = Object.entries(summary)
    .filter(([key]) => key !== 'type')
    .map(([key, value]) => [escapeHtml(key), escapeHtml(fieldText(key, value))]);
  return table(['field', 'value'], rows);
}

export function configYaml(lines: readonly MetricsLine[]): string | undefined {
  const config = lastOf(lines, 'run')?.config;
  if (config === undefined) return undefined;
  return `<pre class="config">${escapeHtml(stringify(config))}</pre>`;
}
