/**
 * The HTML report of real runs, opened from disk in a real headless Chromium: it loads nothing but itself, logs no
 * error, and draws every chart with the run's points (counted from metrics.jsonl). A 40-step MNIST MLP on 2
 * workers (evaluated every 10 steps, traced) and a two-stage job whose second stage has two seeds; full-page
 * screenshots are kept in test-artifacts/. Needs /usr/bin/chromium (Debian's `chromium`; .ci/run installs it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Chart } from 'chart.js';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import type { MetricsLine } from '../../launcher/run/metrics-lines.ts';
import { lastOf, linesOf, readMetrics } from '../../launcher/run/metrics-read.ts';
import { REPORT_FILE, reportHtml, writeReport } from '../../launcher/run/report.ts';

const CHROMIUM = '/usr/bin/chromium';
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(`report-browser.test.ts skipped: no ${CHROMIUM} (apt-get install chromium)`);
}

const base = {
  backend: 'cpu',
  seed: 7,
  data: { dataset: 'mnist' },
  optimizer: { type: 'Adam', params: { lr: 0.002 } },
  train_micro_batch_size_per_gpu: 16,
  steps_per_print: 1000,
};

const mlpJob = {
  ...base,
  name: 'report-mlp',
  model: { type: 'mlp', layers: [784, 32, 10] },
  scheduler: {
    type: 'WarmupCosineLR',
    params: { warmup_num_steps: 10, warmup_type: 'linear', cos_min_ratio: 0.01 },
  },
  steps: 40,
  eval: { every_steps: 10 },
  trace: {},
};

const stagedJob = {
  ...base,
  name: 'report-stages',
  steps: 10,
  eval: { every_steps: 5 },
  stages: [
    { name: 'wide', model: { type: 'mlp', layers: [784, 32, 10] } },
    { name: 'narrow', model: { type: 'mlp', layers: [784, 8, 10] }, seeds: [1, 2] },
  ],
};

/** What a page did while it loaded: every request and every error. */
interface Opened {
  page: Page;
  requests: string[];
  errors: string[];
}

/** Points each chart's datasets have laid out (finite x and y), keyed by the canvas's data-chart id. */
type Drawn = Record<string, number[]>;

describe.skipIf(!hasChromium)('the HTML report in Chromium', () => {
  let browser: Browser;
  let tmp: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'kd-report-browser-'));
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  async function open(path: string): Promise<Opened> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const opened: Opened = { page, requests: [], errors: [] };
    page.on('request', (r) => opened.requests.push(r.url()));
    page.on('console', (m) => {
      if (m.type() === 'error') opened.errors.push(m.text());
    });
    page.on('pageerror', (e) => opened.errors.push(e.message));
    await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
    return opened;
  }

  /** Opens the report, checks it stayed on its own file without an error, and keeps its screenshot. */
  async function drawnReport(path: string, screenshot: string): Promise<Drawn> {
    const { page, requests, errors } = await open(path);
    expect(errors).toEqual([]);
    expect(requests).toEqual([pathToFileURL(path).href]);
    const drawn = await page.evaluate(() => {
      const { Chart: charts } = window as unknown as { Chart: typeof Chart };
      const out: Record<string, number[]> = {};
      for (const canvas of document.querySelectorAll<HTMLCanvasElement>('canvas[data-chart]')) {
        const chart = charts.getChart(canvas);
        out[canvas.dataset.chart ?? ''] = (chart?.data.datasets ?? []).map(
          (_, i) =>
            chart!.getDatasetMeta(i).data.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).length,
        );
      }
      return out;
    });
    const png = join(ARTIFACTS, screenshot);
    await page.screenshot({ path: png, fullPage: true });
    expect(statSync(png).size).toBeGreaterThan(10_000);
    await page.close();
    return drawn;
  }

  /** Points of every dataset of a chart together. */
  const total = (drawn: Drawn, id: string) => (drawn[id] ?? []).reduce((a, b) => a + b, 0);

  it('a 40-step MNIST run on 2 workers: every chart drawn with the run’s points, nothing fetched', async () => {
    const runDir = join(tmp, 'mlp');
    await launch(mlpJob, { nproc: 2, runDir }).result;
    const written = writeReport(runDir);
    expect(written.skipped).toBe(0);
    const { lines } = readMetrics(join(runDir, 'metrics.jsonl'));
    const steps = linesOf(lines, 'step').length;
    const evals = linesOf(lines, 'eval').length;
    // Paced by the trainer (src/trainer/record-pacer.ts): the first, the evaluated and the last step at least.
    expect(steps).toBeGreaterThanOrEqual(evals + 1);
    expect(evals).toBeGreaterThanOrEqual(4);
    expect(written).toMatchObject({ steps, evals });

    const drawn = await drawnReport(written.path, 'report.png');
    expect(Object.keys(drawn).sort()).toEqual(
      ['accuracy', 'comm', 'loss', 'lr', 'memory-rss', 'memory-states', 'throughput', 'timeline'].sort(),
    );
    for (const id of ['loss', 'lr', 'throughput', 'comm']) expect(drawn[id], id).toEqual([steps]);
    expect(drawn.accuracy).toEqual([evals]);
    // A bar per rank: measured beside the estimate, then peak RSS; busy and idle stacked for each traced rank.
    const ranks = new Set(linesOf(lines, 'memory').map((m) => m.rank)).size;
    expect(ranks).toBe(2);
    expect(drawn['memory-states']).toEqual([ranks, ranks]);
    expect(drawn['memory-rss']).toEqual([ranks]);
    const traced = lastOf(lines, 'timeline')?.ranks.length;
    expect(traced).toBe(2);
    expect(drawn.timeline).toEqual([traced, traced]);
  });

  it('a two-stage job, its report rebuilt by `kd-launch report`: one curve per run, the stages table and bars', async () => {
    const runDir = join(tmp, 'stages');
    await launch(stagedJob, { nproc: 2, runDir }).result;
    const cli = spawnSync(process.execPath, [CLI, 'report', runDir], { encoding: 'utf8', timeout: 60_000 });
    expect(cli.status, cli.stderr).toBe(0);
    const { lines } = readMetrics(join(runDir, 'metrics.jsonl'));
    const steps = linesOf(lines, 'step').length;
    const evals = linesOf(lines, 'eval').length;
    expect(steps).toBeGreaterThanOrEqual(6);
    expect(cli.stdout).toBe(
      `report written to ${join(runDir, REPORT_FILE)} (${steps} steps, ${evals} evals)\n`,
    );

    const drawn = await drawnReport(join(runDir, REPORT_FILE), 'report-stages.png');
    // One curve per run (stage wide, stage narrow's seeds 1 and 2), each with its run's recorded steps.
    const perRun = ['wide', 'narrow/1', 'narrow/2'].map(
      (run) =>
        linesOf(lines, 'step').filter(
          (l) => `${l.label?.stage}${l.label?.seed ? `/${l.label.seed}` : ''}` === run,
        ).length,
    );
    expect(perRun.every((n) => n >= 2)).toBe(true);
    expect(drawn.loss).toEqual(perRun);
    for (const id of ['lr', 'throughput', 'comm']) expect(total(drawn, id), id).toBe(steps);
    expect(drawn.accuracy).toHaveLength(3);
    expect(total(drawn, 'accuracy')).toBe(evals);
    expect(lastOf(lines, 'stages')?.rows).toHaveLength(2);
    expect(drawn['stages-accuracy']).toEqual([2]);

    const { page } = await open(join(runDir, REPORT_FILE));
    const legend = await page.evaluate(() => {
      const { Chart: charts } = window as unknown as { Chart: typeof Chart };
      const canvas = document.querySelector<HTMLCanvasElement>('canvas[data-chart="loss"]')!;
      return charts.getChart(canvas)?.data.datasets.map((d) => d.label);
    });
    expect(legend).toEqual(['wide', 'narrow seed 1', 'narrow seed 2']);
    const table = await page.locator('#stages table tbody tr').allInnerTexts();
    expect(table).toHaveLength(2);
    expect(table[1]).toMatch(/^narrow\tmlp\tcross_entropy\t—\t1, 2\t\d+\.\d\d % ± \d+\.\d\d %\t/);
    await page.close();
  });

  it('a hostile job name is text on the page', async () => {
    const hostile = '</script><img src=x onerror=alert(1)>';
    const path = join(tmp, 'hostile.html');
    const lines: MetricsLine[] = [
      {
        type: 'run',
        job: hostile,
        job_file: undefined,
        world: 1,
        nodes: 1,
        started: new Date().toISOString(),
        config: { name: hostile },
        memory_estimate: undefined,
      },
    ];
    writeFileSync(path, reportHtml(lines, ''));
    const { page, errors } = await open(path);
    expect(errors).toEqual([]);
    expect(await page.locator('img').count()).toBe(0);
    expect(await page.locator('h1 .job').innerText()).toBe(hostile);
    await page.close();
  });
});
