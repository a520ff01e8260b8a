/**
 * The HTML report from metrics.jsonl without a browser: what a run that stopped anywhere leaves (a line cut short,
 * no summary, no end line), lines of types it does not know, hostile strings kept as text, and
 * `kd-launch report`'s answers. The browser suite (report-browser.test.ts) draws real runs' reports.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MetricsLine, StepLine } from '../../launcher/run/metrics-lines.ts';
import { parseMetrics } from '../../launcher/run/metrics-read.ts';
import { REPORT_FILE, reportHtml, writeReport } from '../../launcher/run/report.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
const HOSTILE = '</script><img src=x onerror=alert(1)>';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-report-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function step(n: number): StepLine {
  return {
    type: 'step',
    step: n,
    total_steps: 20,
    epoch: 1,
    epochs: 1,
    loss: 2.3 / n,
    lr: 0.001,
    grad_norm: 1,
    samples_per_s: 800,
    comm_fraction: 0.2,
    rss_bytes: 3e8,
    time: 1_800_000_000 + n,
  };
}

/** The lines of a run killed after step 3: no eval, no memory, no summary, no end line. */
function killedRun(job: string): MetricsLine[] {
  return [
    {
      type: 'run',
      job,
      job_file: undefined,
      world: 2,
      nodes: 1,
      started: new Date(1_800_000_000_000).toISOString(),
      config: { name: job, steps: 20, model: { type: 'mlp', layers: [784, 16, 10] } },
      memory_estimate: undefined,
    },
    step(1),
    step(2),
    step(3),
  ];
}

const jsonl = (lines: readonly unknown[]) => lines.map((l) => JSON.stringify(l)).join('\n');

function writeRun(name: string, text: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'metrics.jsonl'), text);
  return dir;
}

describe('the run report', () => {
  it('a killed run: the cut line and an unknown type are skipped and said; absent sections are left out', () => {
    const text = `${jsonl(killedRun('mnist'))}\n{"type":"checkpoint","step":3}\n{"type":"step","step":4,"lo`;
    const dir = writeRun('killed', text);
    const written = writeReport(dir);
    expect(written).toEqual({ path: join(dir, REPORT_FILE), skipped: 2, steps: 3, evals: 0 });
    const html = readFileSync(written.path, 'utf8');
    expect(html).toContain('line 5: unknown line type &quot;checkpoint&quot;');
    expect(html).toContain('line 6: not JSON');
    expect(html).toContain('did not finish: no end line');
    expect(html).toContain('not written: the run did not finish');
    expect(html).toContain('at least 3.0 s');
    for (const chart of ['loss', 'lr', 'throughput', 'comm']) expect(html).toContain(`data-chart="${chart}"`);
    for (const absent of [
      'data-chart="accuracy"',
      'data-chart="memory-states"',
      'id="summary"',
      'id="stages"',
    ])
      expect(html).not.toContain(absent);
    expect(html).toMatch(/<pre class="config">name: mnist\nsteps: 20\n/);
  });

  it('a line missing a field the report reads is skipped with its field named', () => {
    const { lines, skipped } = parseMetrics(jsonl([step(1), { ...step(2), lr: 'fast' }, { type: 'end' }]));
    expect(lines).toHaveLength(1);
    expect(skipped.map((s) => s.line)).toEqual([2, 3]);
    expect(skipped[0].reason).toMatch(/a 'step' line with a bad lr/);
    expect(skipped[1].reason).toMatch(/a 'end' line with a bad ok/);
  });

  it('a diverged loss (NaN, written as null) is a gap, not a skipped line', () => {
    const { lines, skipped } = parseMetrics(jsonl([{ ...step(1), loss: Number.NaN }]));
    expect(skipped).toEqual([]);
    expect((lines[0] as StepLine).loss).toBeNull();
  });

  it('a hostile job name and stage name stay text: no element, no end of the script', () => {
    const lines: MetricsLine[] = [
      ...killedRun(HOSTILE),
      { ...step(1), label: { stage: HOSTILE, run: 1, runs: 1 } },
      { type: 'end', ok: true, wall_s: 9, time: 1_800_000_010, resume: undefined },
    ];
    const html = reportHtml(lines, '/* chart.js */');
    expect(html).not.toContain('<img');
    expect(html.match(/<script/g)).toHaveLength(3);
    expect(html.match(/<\/script>/g)).toHaveLength(3);
    expect(html).toContain('&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;');
    const data = html.match(/<script type="application\/json" id="report-charts">(.*?)<\/script>/s);
    expect(JSON.stringify(JSON.parse(data![1]))).toContain(HOSTILE);
  });

  it('without a single chart, Chart.js is not inlined', () => {
    const html = reportHtml(killedRun('early').slice(0, 1), 'CHART_JS_CODE');
    expect(html).not.toContain('CHART_JS_CODE');
    expect(html).not.toContain('<script');
  });
});

describe('kd-launch report', () => {
  const kd = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, 'report', ...args], { encoding: 'utf8', timeout: 60_000 });

  it('rebuilds report.html and says what it drew', () => {
    const dir = writeRun('cli', jsonl(killedRun('cli')));
    const r = kd(dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`report written to ${join(dir, REPORT_FILE)} (3 steps, 0 evals)\n`);
    expect(readFileSync(join(dir, REPORT_FILE), 'utf8')).toContain('<canvas data-chart="loss">');
  });

  it('a missing run directory or metrics.jsonl is one line, exit 2', () => {
    const missing = kd(join(tmp, 'no-such-run'));
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe(`kd-launch report: ${join(tmp, 'no-such-run')}: no such run directory\n`);
    const empty = join(tmp, 'empty');
    mkdirSync(empty);
    const bare = kd(empty);
    expect(bare.status).toBe(2);
    expect(bare.stderr).toBe(`kd-launch report: ${empty}: no metrics.jsonl (not a run directory?)\n`);
  });
});
