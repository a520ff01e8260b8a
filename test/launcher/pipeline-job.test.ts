/**
 * Pipelined jobs are training jobs like the others (one training loop): evaluation during training, activation
 * checkpointing inside the pipeline stages, fp16 with its loss scale and skipped steps, checkpoints that resume bit
 * for bit after a kill -9, a pipelined checkpoint resumed as an unsplit job, and a pipelined job stage in a
 * multi-stage job. Small MLPs on MNIST, the cpu backend, 4 workers (2 pipeline stages × 2 replicas).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { readRankCheckpoint } from '../../src/engine/checkpoint.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import type { PipelineSummary, RunSummary } from '../../src/trainer/summary.ts';
import { expectSameBits, killMidSave, maxRelDiff } from './compare.ts';

let tmp: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-pipe-job-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Job = Record<string, unknown>;

/** 2 pipeline stages × 2 replicas, ZeRO 1 inside the stages, 2 micro-batches of 4: train_batch_size 16. */
function pipelineJob(over: Job): Job {
  return {
    name: 'pipeline-job-test',
    backend: 'cpu',
    seed: 5,
    model: { type: 'mlp', layers: [784, 24, 24, 24, 10], dropout: 0 },
    data: { dataset: 'mnist', shuffle: true },
    optimizer: { type: 'Adam', params: { lr: 0.002, weight_decay: 0 } },
    gradient_clipping: 1,
    zero_optimization: { stage: 1 },
    train_micro_batch_size_per_gpu: 4,
    pipeline: { stages: 2, micro_batches: 2, schedule: '1f1b' },
    steps: 12,
    steps_per_print: 1000,
    ...over,
  };
}

async function runJob(
  job: Job,
  nproc = 4,
): Promise<{ summary: RunSummary; logs: string[]; evalSteps: number[] }> {
  const handle = launch(job, { nproc });
  const logs: string[] = [];
  const evalSteps: number[] = [];
  for await (const e of handle.events) {
    if (e.type === 'log') logs.push(e.line);
    if (e.type === 'eval') evalSteps.push(e.record.step);
  }
  const { reports } = await handle.result;
  const summary = reports.map((r) => r.data).find((d) => (d as { kind?: string }).kind === 'summary');
  if (!summary) throw new Error('no summary report');
  return { summary: summary as RunSummary, logs, evalSteps };
}

describe('a pipelined job', () => {
  // Every part of the loop at once: evaluation every 4 steps, activation checkpointing inside the stages, fp16
  // starting at a loss scale (2^20) that overflows, so some steps are really skipped and the scale really moves.
  const full = {
    eval: { every_steps: 4 },
    activation_checkpointing: { enabled: true, every_n_layers: 1 },
    fp16: { enabled: true, initial_scale_power: 20 },
  };

  it('with eval, activation checkpointing and fp16: killed -9 mid-save and resumed, it ends on the uninterrupted run’s bits', async () => {
    const straight = join(tmp, 'straight');
    const { summary, logs, evalSteps } = await runJob(pipelineJob({ ...full, output_dir: straight }));
    const s = summary as PipelineSummary;
    expect(s.pipeline_stages).toBe(2);
    expect(s.data_parallel).toBe(2);
    expect(s.skipped_steps).toBeGreaterThan(0);
    expect(s.skipped_steps).toBeLessThan(12);
    expect(s.loss_scale).toBeLessThan(2 ** 20);
    // It trained: below the loss of a uniform guess over 10 classes.
    expect(s.final_loss).toBeLessThan(Math.log(10));
    // Every 4 steps, and at the end.
    expect(evalSteps).toEqual([4, 8, 12]);
    expect(logs.some((l) => /loss_scale \d+ skipped \d+/.test(l))).toBe(true);

    // The same job, checkpointing every 4 steps; rank 3 (stage 1, replica 1) is killed while it writes step 8.
    const ckpt = join(tmp, 'ckpt-kill');
    const job = pipelineJob({ ...full, checkpoint: { dir: ckpt, every_steps: 4, keep: 2 } });
    await killMidSave(job, { nproc: 4, rank: 3, checkpointDir: ckpt, step: 8 });
    expect(readFileSync(join(ckpt, 'latest'), 'utf8').trim()).toBe('step-4');
    // Each rank wrote what it owns, in the whole model's flat space: stage 1's ranks start past stage 0's blocks
    // (balanced by parameters, stage 0 is the first dense layer alone).
    const stage0 = 784 * 24 + 24;
    const r2 = readRankCheckpoint(join(ckpt, 'step-4'), 2);
    expect(r2.range.start).toBe(stage0);
    expect(r2.slots.at(-1)).toMatchObject({
      name: 'dense3/bias',
      offset: stage0 + 2 * (24 * 24 + 24) + 24 * 10,
    });

    const resumed = join(tmp, 'resumed');
    const after = await runJob({ ...job, resume: 'auto', output_dir: resumed });
    expect(after.logs.some((l) => l.includes('resumed from') && l.includes('step-4'))).toBe(true);
    const a = loadNetModel(resumed).values;
    const b = loadNetModel(straight).values;
    expectSameBits(a, b);
    expect(after.summary.final_loss).toBe(summary.final_loss);
  });

  it('its checkpoint resumes as an unsplit job, which ends with the pipelined run’s loss and weights (1e-5)', async () => {
    const ckpt = join(tmp, 'ckpt-split');
    const piped = join(tmp, 'piped');
    const p = await runJob(
      pipelineJob({ checkpoint: { dir: ckpt, every_steps: 4, keep: 3 }, output_dir: piped }),
    );
    // The unsplit job: the same replicas (world 2), micro-batch and accumulation, so the same data order.
    const unsplit = join(tmp, 'unsplit');
    const u = await runJob(
      pipelineJob({
        pipeline: undefined,
        gradient_accumulation_steps: 2,
        resume: join(ckpt, 'step-8'),
        output_dir: unsplit,
      }),
      2,
    );
    expect(u.logs.some((l) => l.includes('resumed from') && l.includes('step-8'))).toBe(true);
    expect(Math.abs(u.summary.final_loss - p.summary.final_loss) / p.summary.final_loss).toBeLessThan(1e-5);
    expect(maxRelDiff(loadNetModel(unsplit).values, loadNetModel(piped).values)).toBeLessThan(1e-5);
  });

  it('runs as a job stage: a pipelined student distilled from an earlier stage, in the comparison table', async () => {
    const out = join(tmp, 'staged');
    const { reports } = await launch(
      {
        name: 'staged-pipeline',
        backend: 'cpu',
        seed: 3,
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 8,
        optimizer: { type: 'Adam', params: { lr: 0.003 } },
        steps: 20,
        steps_per_print: 1000,
        output_dir: out,
        stages: [
          { name: 'teacher', model: { type: 'mlp', layers: [784, 32, 10] } },
          {
            name: 'student',
            model: { type: 'mlp', layers: [784, 16, 16, 10] },
            pipeline: { stages: 2, micro_batches: 2 },
            teachers: [{ stage: 'teacher' }],
            distillation: { temperature: 2 },
          },
        ],
      },
      { nproc: 2 },
    ).result;
    const stages = reports.map((r) => r.data).filter((d) => (d as { kind?: string }).kind === 'stages');
    expect(stages).toHaveLength(1);
    const rows = (stages[0] as JobStagesReport).rows;
    expect(rows.map((r) => [r.stage, r.objective, r.teachers])).toEqual([
      ['teacher', 'cross_entropy', ''],
      ['student', 'distillation', 'stage teacher'],
    ]);
    expect(rows[1].parameters).toBe(784 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10);
    for (const r of rows) expect(r.accuracy_mean).toBeGreaterThan(0.2);
    expect(loadNetModel(join(out, 'student')).values).toHaveLength(6);
  });

  it('a pipelined job stage that cannot be pipelined is refused before any worker starts, naming the field and line', () => {
    const file = join(tmp, 'bad-stage.yaml');
    writeFileSync(
      file,
      [
        'name: bad-stage',
        'backend: cpu',
        'data: {dataset: mnist}',
        'optimizer: {type: Adam, params: {lr: 0.001}}',
        'train_micro_batch_size_per_gpu: 8',
        'steps: 5',
        'stages:',
        '  - {name: a, model: {type: mlp, layers: [784, 16, 10]}}',
        '  - name: b',
        '    model: {type: mlp, layers: [784, 16, 16, 10]}',
        '    pipeline: {stages: 2, micro_batches: 2}',
        '    zero_optimization: {stage: 3}',
        '',
      ].join('\n'),
    );
    expect(() => launch(file, { nproc: 2 })).toThrow(
      `${file}:12:32: stages.1.zero_optimization.stage: stage 'b': ZeRO stage 3 does not combine with pipeline parallelism`,
    );
  });
});
