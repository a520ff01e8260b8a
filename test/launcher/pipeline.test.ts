/**
 * Pipeline parallelism over real worker processes. One launch of 4 workers trains every configuration in turn
 * (test/fixtures/pipeline.worker.ts: GPipe and 1F1B at P = 2 and 3 with M = 1, 4 and 8, and P × D = 2 × 2 with
 * ZeRO 0–2 inside the stages); the unsplit references are the built-in train job at world 1 with the same
 * micro-batch and M (or M × D) accumulation steps. Clipping is on and active, so the stages must agree on the
 * global gradient norm. A traced run of the pipeline job itself checks the trace file and the summary.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { formatPlan } from '../../launcher/plan.ts';
import { ConfigError } from '../../src/config/errors.ts';
import type { ModelSpec } from '../../src/config/schema.ts';
import { buildNet } from '../../src/models/build.ts';
import { loadNetModel, saveNetModel } from '../../src/models/net-dir.ts';
import { type ChromeTrace, type CompleteEvent, chromeTraceProblems } from '../../src/trace/chrome-trace.ts';
import type { PipelineSummary } from '../../src/trainer/summary.ts';
import type { PipelineCase, PipelineCaseReport } from '../fixtures/pipeline.worker.ts';

const SCRIPT = fileURLToPath(new URL('../fixtures/pipeline.worker.ts', import.meta.url));
const MICRO = 4;
const STEPS = 5;

/** 4 blocks, so that 3 stages are possible; Adam with active clipping (the gradient norm is above 0.5). */
const BASE = {
  name: 'pipeline-test',
  backend: 'cpu',
  seed: 11,
  model: { type: 'mlp', layers: [784, 24, 24, 24, 10], dropout: 0 },
  data: { dataset: 'mnist', shuffle: true },
  optimizer: { type: 'Adam', params: { lr: 0.002, weight_decay: 0 } },
  gradient_clipping: 0.5,
  train_micro_batch_size_per_gpu: MICRO,
  steps: STEPS,
  steps_per_print: 1000,
};

const CASES: PipelineCase[] = [
  ...(['gpipe', '1f1b'] as const).flatMap((schedule) =>
    [2, 3].flatMap((stages) =>
      [1, 4, 8].map((m) => ({
        name: `${schedule} P=${stages} M=${m}`,
        stages,
        replicas: 1,
        micro_batches: m,
        schedule,
      })),
    ),
  ),
  { name: 'gpipe 2x2 M=4 zero2', stages: 2, replicas: 2, micro_batches: 4, schedule: 'gpipe', zero: 2 },
  { name: '1f1b 2x2 M=4 zero1', stages: 2, replicas: 2, micro_batches: 4, schedule: '1f1b', zero: 1 },
  { name: '1f1b 2x2 M=4', stages: 2, replicas: 2, micro_batches: 4, schedule: '1f1b' },
];

let tmp: string;
let cases: Map<string, PipelineCaseReport>;
const references = new Map<number, Float32Array[]>();

/** The unsplit model: the train job at world 1, micro-batch MICRO, `accumulation` steps. */
async function reference(accumulation: number): Promise<Float32Array[]> {
  const out = join(tmp, `ref-${accumulation}`);
  await launch({ ...BASE, gradient_accumulation_steps: accumulation, output_dir: out }, { nproc: 1 }).result;
  return loadNetModel(out).values;
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-pipe-'));
  const { reports } = await launch(
    {
      name: 'pipeline-check',
      script: SCRIPT,
      comm: { timeout_s: 120 },
      args: { job: BASE, cases: CASES },
    },
    { nproc: 4 },
  ).result;
  cases = new Map(
    reports
      .map((r) => r.data as PipelineCaseReport)
      .filter((d) => d.kind === 'pipeline-case')
      .map((d) => [d.name, d]),
  );
  for (const a of [1, 4, 8]) references.set(a, await reference(a));
}, 240_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** ‖a − b‖ / ‖b‖ per tensor, the worst over the tensors. */
function worstTensorError(a: readonly number[][], b: readonly Float32Array[]): number {
  expect(a.map((t) => t.length)).toEqual(b.map((t) => t.length));
  let worst = 0;
  a.forEach((ta, i) => {
    let diff = 0;
    let norm = 0;
    ta.forEach((v, j) => {
      diff += (v - b[i][j]) ** 2;
      norm += b[i][j] ** 2;
    });
    worst = Math.max(worst, Math.sqrt(diff / norm));
  });
  return worst;
}

describe('pipelined training equals the unsplit model after 5 steps (1e-5 relative per tensor)', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (name, c) => {
    const got = cases.get(name);
    expect(got, `no report for ${name}`).toBeDefined();
    const ref = references.get(c.micro_batches * c.replicas);
    if (!ref) throw new Error(`no reference for ${c.micro_batches * c.replicas} accumulation steps`);
    expect(worstTensorError(got!.params, ref)).toBeLessThanOrEqual(1e-5);
    // Something was trained: the result is not the initial model, and the loss is a real number.
    expect(Number.isFinite(got!.loss)).toBe(true);
  });

  it('the tolerance tells another batch apart: M = 4 against the 8-step reference', () => {
    expect(worstTensorError(cases.get('1f1b P=2 M=4')!.params, references.get(8)!)).toBeGreaterThan(1e-3);
  });
});

describe('live micro-batch activations, measured per stage', () => {
  it.each(CASES.filter((c) => c.replicas === 1).map((c) => [c.name, c] as const))('%s', (name, c) => {
    const peaks = cases.get(name)!.peaks;
    expect(peaks).toHaveLength(c.stages);
    if (c.schedule === 'gpipe') expect(peaks).toEqual(peaks.map(() => c.micro_batches));
    else {
      // 1F1B: stage s holds at most P − s (never more than M): at most P everywhere.
      expect(peaks).toEqual(peaks.map((_, s) => Math.min(c.stages - s, c.micro_batches)));
      for (const p of peaks) expect(p).toBeLessThanOrEqual(c.stages);
    }
  });
});

describe('the pipeline training job', () => {
  it('writes a valid trace (one lane per rank, nested spans) and a summary with bubble and peaks', async () => {
    const path = join(tmp, 'trace.json');
    const job = { ...BASE, pipeline: { stages: 2, micro_batches: 4, schedule: '1f1b' }, steps: 3 };
    const { reports } = await launch(job, { nproc: 2, trace: { path } }).result;
    const summary = reports.find((r) => (r.data as { kind?: string }).kind === 'summary')
      ?.data as PipelineSummary;
    expect(summary).toMatchObject({
      world: 2,
      steps: 3,
      pipeline_stages: 2,
      data_parallel: 1,
      micro_batches: 4,
      train_batch_size: MICRO * 4,
      peak_live_activations: [2, 1],
      bubble_ideal: 0.2,
    });
    expect(summary.test_accuracy).toBeGreaterThan(0.1);
    expect(summary.bubble).toBeGreaterThanOrEqual(0);
    expect(summary.bubble).toBeLessThan(1);

    const trace = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
    expect(chromeTraceProblems(trace, { ranks: [0, 1] })).toEqual([]);
    const x = trace.traceEvents.filter((e): e is CompleteEvent => e.ph === 'X');
    for (const rank of [0, 1]) {
      const mine = x.filter((e) => e.tid === rank);
      const cats = new Set(mine.map((e) => e.cat));
      for (const cat of ['step', 'forward', 'backward', 'send', 'recv', 'wait', 'allreduce', 'optimizer'])
        expect(cats.has(cat), `rank ${rank} has ${cat} spans`).toBe(true);
      expect(mine.filter((e) => e.cat === 'forward')).toHaveLength(3 * 4);
      expect(mine.filter((e) => e.cat === 'backward')).toHaveLength(3 * 4);
      // Every span but the steps lies inside its step's span.
      const steps = mine.filter((e) => e.cat === 'step');
      expect(steps).toHaveLength(3);
      for (const e of mine.filter((s) => s.cat !== 'step')) {
        const parent = steps.find((s) => s.args?.['step'] === e.args?.['step']);
        expect(parent, e.name).toBeDefined();
        expect(e.ts).toBeGreaterThanOrEqual(parent!.ts);
        expect(e.ts + e.dur).toBeLessThanOrEqual(parent!.ts + parent!.dur + 0.002);
      }
    }
    // A micro-batch's forward on stage 1 starts after stage 0 sent its activation (one clock for both lanes).
    const sent = x.find((e) => e.tid === 0 && e.name === 'send activation 0' && e.args?.['step'] === 2);
    const fwd = x.find((e) => e.tid === 1 && e.name === 'forward 0' && e.args?.['step'] === 2);
    expect(fwd!.ts).toBeGreaterThanOrEqual(sent!.ts);
  }, 120_000);

  it('distillation: a pipelined student (teacher on the last stage) trains to the unsplit student’s weights', async () => {
    const teacherDir = join(tmp, 'teacher');
    const teacherSpec: ModelSpec = { type: 'mlp', layers: [784, 32, 10], activation: 'relu', dropout: 0 };
    await saveNetModel(teacherDir, teacherSpec, buildNet(teacherSpec).init(7));
    const distill = {
      ...BASE,
      gradient_accumulation_steps: 4,
      teachers: [{ model_dir: teacherDir }],
      distillation: { temperature: 4, hard_label_weight: 0.5, kd_loss_weight: 1 },
    };
    const unsplit = join(tmp, 'distill-unsplit');
    await launch({ ...distill, output_dir: unsplit }, { nproc: 1 }).result;
    const piped = join(tmp, 'distill-piped');
    const { reports } = await launch(
      { ...distill, pipeline: { stages: 2, micro_batches: 4, schedule: '1f1b' }, output_dir: piped },
      { nproc: 2 },
    ).result;
    const summary = reports.find((r) => (r.data as { kind?: string }).kind === 'summary')
      ?.data as PipelineSummary;
    expect(summary.objective).toBe('distillation');
    const got = loadNetModel(piped).values.map((v) => Array.from(v));
    expect(worstTensorError(got, loadNetModel(unsplit).values)).toBeLessThanOrEqual(1e-5);
    const intermediate = { ...distill, pipeline: { stages: 2, micro_batches: 4 } };
    (intermediate.distillation as Record<string, unknown>)['intermediate_matches'] = [
      { layer_T: 0, layer_S: 0, feature: 'hidden', loss: 'hidden_mse', weight: 1 },
    ];
    expect(() => launch(intermediate, { nproc: 2, dryRun: true })).toThrow(/intermediate_matches/);
  }, 120_000);

  it('--dry-run prints the rank layout and the stage partition', () => {
    const job = {
      ...BASE,
      pipeline: { stages: 2, micro_batches: 4, schedule: 'gpipe', partition: 'uniform' },
    };
    const text = formatPlan(launch(job, { nproc: 4, dryRun: true }).plan);
    expect(text).toContain('batch      train_batch_size 32 = micro 4 × accumulation 4 × data-parallel 2');
    expect(text).toContain('pipeline   2 stages × 2 data-parallel = world 4');
    expect(text).toMatch(/0 +0-1 \(dense0…dense1\) +19,440 +0 1/);
    expect(text).toMatch(/1 +2-3 \(dense2…dense3\) +850 +2 3/);
    expect(text).toContain('pipelines  replica 0: 0 → 2; replica 1: 1 → 3');
  });

  it('refuses a world the stages do not divide, and accumulation that is not micro_batches', () => {
    const pipeline = { stages: 2, micro_batches: 4 };
    const err = (job: Record<string, unknown>, nproc: number) => {
      try {
        launch(job, { nproc, dryRun: true });
      } catch (e) {
        return e;
      }
      return undefined;
    };
    const world = err({ ...BASE, pipeline }, 3) as ConfigError;
    expect(world).toBeInstanceOf(ConfigError);
    expect(world.message).toContain('pipeline.stages 2 does not divide the world of 3 workers');
    const accum = err({ ...BASE, pipeline, gradient_accumulation_steps: 2 }, 2) as ConfigError;
    expect(accum.message).toContain('gradient_accumulation_steps 2 != pipeline.micro_batches 4');
    const total = err({ ...BASE, pipeline, train_batch_size: 64 }, 4) as ConfigError;
    expect(total.message).toContain(
      'train_batch_size 64 != train_micro_batch_size_per_gpu 4 × pipeline.micro_batches 4 × data-parallel size 2',
    );
    const zero3 = err({ ...BASE, pipeline, zero_optimization: { stage: 3 } }, 2) as ConfigError;
    expect(zero3.message).toContain('ZeRO stage 3 does not combine with pipeline parallelism');
    const cuts = err({ ...BASE, pipeline: { ...pipeline, partition: [4] } }, 2) as ConfigError;
    expect(cuts.message).toMatch(/pipeline\.partition.*must be a block index in 1\.\.3/);
  });
});
