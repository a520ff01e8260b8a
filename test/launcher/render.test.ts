/** What the human renderer makes of a run's figures: the summary table, the rerun advice, the bars' ETA. */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { etaSeconds, ProgressTracker } from '../../launcher/progress.ts';
import { barLines } from '../../launcher/progress-display.ts';
import { commandLine, reportText, resumeAdvice, summaryTable } from '../../launcher/render.ts';
import type { StepRecord } from '../../src/trainer/records.ts';
import type { PipelineSummary } from '../../src/trainer/summary.ts';

const summary: PipelineSummary = {
  kind: 'summary',
  backend: 'cpu',
  world: 2,
  train_batch_size: 64,
  steps: 300,
  epochs: 300 / 124,
  final_loss: 0.04651,
  test_accuracy: 0.9556,
  samples_per_s: 4569.2,
  train_s: 4.21,
  wall_s: 4.63,
  parameters: 269322,
  model_bytes: 269322 * 4,
  comm_fraction: 0.389,
  steady_samples_per_s: 4728.4,
  zero_stage: 0,
  state_bytes_per_rank: 5 * 2 ** 20,
  params_bytes: 2 * 2 ** 20,
  grads_bytes: 2 ** 20,
  optimizer_bytes: 2 * 2 ** 20,
  gathered_peak_bytes: 0,
  objective: 'cross_entropy',
  model_parameters: 269322,
  inference_samples_per_s: 96505,
  model_dir: join(process.cwd(), 'runs', 'x', 'model'),
  model_dir_bytes: 1.5 * 2 ** 20,
  pipeline_stages: 2,
  data_parallel: 1,
  micro_batches: 4,
  pipeline_schedule: '1f1b',
  bubble: 0.21,
  bubble_ideal: 0.2,
  peak_live_activations: [2, 1],
};

describe('the summary table', () => {
  const text = summaryTable(summary);
  const row = (name: string) => text.split('\n').find((l) => l.startsWith(`${name}  `));

  it('gives each figure one name and its unit: %, MiB, s, samples/s, thousands separated', () => {
    expect(row('test accuracy')).toMatch(/ 95\.56 {2}%$/);
    expect(row('time in gradient collectives')).toMatch(/ 38\.9 {2}%$/);
    expect(row('pipeline bubble')).toMatch(/ 21\.0 {2}%$/);
    expect(row('model parameters')).toMatch(/ 269,322$/);
    expect(row('model state per rank')).toMatch(/ 5\.00 {2}MiB$/);
    expect(row('training time')).toMatch(/ 4\.2 {2}s$/);
    expect(row('training throughput')).toMatch(/ 4,569 {2}samples\/s$/);
    expect(row('peak live micro-batches per stage')).toMatch(/ 2, 1$/);
    // Figures that say nothing here are left out: no projections, no ZeRO-3 gathering.
    expect(text).not.toMatch(/trained parameters|gathered/);
    // No raw field names: every row's name is words.
    expect(text).not.toMatch(/^\S*_/m);
  });

  it('counts epochs from 1, as the bars do, and says where the model went', () => {
    expect(row('epochs')).toMatch(/ 3 {2}\(2\.42 passes\)$/);
    expect(text.split('\n').at(-1)).toBe(`model written to ${join('runs', 'x', 'model')} (1.50 MiB)`);
  });
});

describe('after a stopped job', () => {
  const command = commandLine([
    '/usr/bin/node',
    '/usr/lib/node_modules/.bin/kd-launch',
    '--nproc',
    '2',
    'my job.yaml',
  ]);

  it('the command line is the one typed, quoted for a shell', () => {
    expect(command).toBe("kd-launch --nproc 2 'my job.yaml'");
  });

  it('a rerun resumes from the checkpoint, with what its command line needs', () => {
    const resume = {
      reached: 412,
      step: 400,
      totalSteps: 992,
      checkpoint: '/ckpt/step-400',
      checkpointEvery: 200,
    };
    expect(resumeAdvice('interrupted', resume, command)).toBe(
      `interrupted at step 412/992; rerun the same command to resume from step 400 (checkpoint /ckpt/step-400):\n  ${command}`,
    );
    expect(resumeAdvice('failed', { ...resume, set: 'resume=auto' }, command)).toMatch(
      /^failed at step 412\/992; rerun it with --set resume=auto to resume from step 400 .*\n {2}kd-launch .* --set resume=auto$/,
    );
  });

  it('without a checkpoint a rerun starts over, and the advice says how to checkpoint', () => {
    const resume = {
      reached: 412,
      step: 0,
      totalSteps: 992,
      checkpoint: undefined,
      checkpointEvery: undefined,
    };
    expect(resumeAdvice('failed', resume, command).split('\n')[0]).toBe(
      'failed at step 412/992; a rerun starts from step 0 (add checkpoint: {every_steps: 100} to the job to resume):',
    );
  });

  it('a job that checkpoints but stopped before its first checkpoint is not told to add one', () => {
    const resume = { reached: 185, step: 0, totalSteps: 992, checkpoint: undefined, checkpointEvery: 200 };
    expect(resumeAdvice('interrupted', resume, command).split('\n')[0]).toBe(
      'interrupted at step 185/992; a rerun starts from step 0 (no checkpoint yet: the job writes its first at step 200):',
    );
  });
});

describe('progress bars', () => {
  const step = (n: number, seed?: number): StepRecord => ({
    kind: 'step',
    label: { stage: 'distilled', ...(seed !== undefined ? { seed } : {}), run: 1, runs: 2 },
    step: n,
    total_steps: 100,
    epoch: 1,
    epochs: 2,
    loss: 0.5,
    lr: 0.001,
    grad_norm: 1,
    samples_per_s: 1000,
    comm_fraction: 0.1,
    rss_bytes: 1,
    time: 0,
  });

  it('the ETA is the run’s pace since its first step; the stage’s next seed starts it again', () => {
    const t = new ProgressTracker();
    expect(etaSeconds(t.step(step(1, 1), 0))).toBeUndefined();
    expect(etaSeconds(t.step(step(11, 1), 1000))).toBeCloseTo(8.9, 9);
    const second = t.step(step(1, 2), 5000);
    expect(t.bars).toHaveLength(1);
    expect(etaSeconds(second)).toBeUndefined();
    expect(barLines(t.bars, 160)[0]).toMatch(
      /^distilled seed 2 {3}1% █?░+ 1\/100 {2}epoch 1\/2 .* ETA -:--$/,
    );
  });

  it('a bar fits the terminal’s width', () => {
    const t = new ProgressTracker();
    t.step(step(50), 0);
    t.step(step(60), 1000);
    for (const columns of [100, 120, 160]) {
      expect(barLines(t.bars, columns)[0].length).toBeLessThanOrEqual(columns);
    }
  });
});

describe("a script's own ctx.report values", () => {
  it('read as one line without --json: fields as key value, numbers to four figures, the rest as JSON', () => {
    expect(reportText({ epoch: 3, accuracy: 0.95561234, tag: 'warm', shape: [2, 3] })).toBe(
      'epoch 3, accuracy 0.9556, tag warm, shape [2,3]',
    );
    expect(reportText(0.5)).toBe('0.5');
    expect(reportText([1, 2])).toBe('[1,2]');
    expect(reportText(null)).toBe('null');
  });
});
