/**
 * Distillation as a job, over real worker processes: teachers from model directories and earlier stages, the
 * equivalences a distributed objective must keep (world 2 = world 1 with the doubled micro-batch; cached logits =
 * the live teacher), multi-stage jobs and their comparison table, stage references checked before any worker
 * starts, and the model directories that make a trained model a teacher. Tiny MLPs, 10 steps, the cpu backend:
 * each launch costs mostly its ~3 s of startup.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { jobStagesTable } from '../../launcher/render.ts';
import { ConfigError } from '../../src/config/errors.ts';
import { ModelSpec } from '../../src/config/schema.ts';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { forwardBlocks } from '../../src/engine/net.ts';
import { buildNet } from '../../src/models/build.ts';
import { KD_MODEL_JSON, loadNetModel, saveNetModel } from '../../src/models/net-dir.ts';
import { modelDirHandler } from '../../src/models/save.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import { maxRelDiff, reportsOf, summaryOf } from './compare.ts';
import { useReferenceKernels } from './reference-kernels.ts';

let tmp: string;
/** A teacher model directory: an MLP 784-24-10 with its seeded initial weights (a teacher need not be good). */
let teacherDir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-distill-'));
  teacherDir = join(tmp, 'teacher');
  const spec = ModelSpec.parse({ type: 'mlp', layers: [784, 24, 10] });
  await saveNetModel(teacherDir, spec, buildNet(spec).init(5));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Job = Record<string, unknown>;

function distillJob(over: Job): Job {
  return {
    name: 'distill-test',
    backend: 'cpu',
    seed: 11,
    model: { type: 'mlp', layers: [784, 32, 10], dropout: 0 },
    data: { dataset: 'mnist', shuffle: true },
    optimizer: { type: 'Adam', params: { lr: 0.002 } },
    train_micro_batch_size_per_gpu: 8,
    steps: 10,
    steps_per_print: 1000,
    teachers: [{ model_dir: teacherDir }],
    ...over,
  };
}

const weights = (dir: string) => loadNetModel(dir).values;

describe('distillation in the training job', () => {
  // Both equivalences compare GEMMs of different row counts (see reference-kernels.ts).
  useReferenceKernels();
  // Soft labels + hard labels + a hidden match through a trained projection: every part of the loss.
  const full = {
    temperature: 2,
    hard_label_weight: 0.5,
    intermediate_matches: [
      {
        layer_T: 0,
        layer_S: 0,
        feature: 'hidden',
        loss: 'hidden_mse',
        weight: 0.5,
        proj: ['linear', 32, 24],
      },
    ],
  };

  it('world 2 × micro-batch 8 equals world 1 × micro-batch 16 after 10 steps (1e-5), teacher live on each rank', async () => {
    const one = join(tmp, 'w1');
    const two = join(tmp, 'w2');
    const s1 = await summaryOf(
      distillJob({ distillation: full, train_micro_batch_size_per_gpu: 16, output_dir: one }),
      1,
    );
    await summaryOf(
      distillJob({ distillation: full, train_micro_batch_size_per_gpu: 8, output_dir: two }),
      2,
    );
    expect(s1.objective).toBe('distillation');
    // The projection (32 × 24 + 24) is trained with the student but is not part of the saved model.
    expect(s1.parameters - s1.model_parameters).toBe(32 * 24 + 24);
    const w1 = weights(one);
    const diff = maxRelDiff(weights(two), w1);
    expect(diff).toBeLessThan(1e-5);
    // The teacher changed the training: the same student on hard labels alone ends elsewhere.
    const ce = join(tmp, 'ce');
    await summaryOf(
      distillJob({ teachers: undefined, train_micro_batch_size_per_gpu: 16, output_dir: ce }),
      1,
    );
    expect(maxRelDiff(weights(ce), w1)).toBeGreaterThan(1e-3);
  });

  it('cached teacher logits train the same weights as the live teacher to 1e-6 after 10 steps', async () => {
    const soft = { temperature: 4, hard_label_weight: 0.3 };
    const live = join(tmp, 'live');
    const cached = join(tmp, 'cached');
    await summaryOf(
      distillJob({ distillation: soft, train_micro_batch_size_per_gpu: 8, output_dir: live }),
      2,
    );
    await summaryOf(
      distillJob({
        distillation: { ...soft, is_caching_logits: true },
        train_micro_batch_size_per_gpu: 8,
        output_dir: cached,
      }),
      2,
    );
    expect(maxRelDiff(weights(cached), weights(live))).toBeLessThan(1e-6);
    // Lossy caches (top-2 logits in fp16) really are read: they train to other weights.
    const lossy = join(tmp, 'lossy');
    await summaryOf(
      distillJob({
        distillation: { ...soft, is_caching_logits: true, logits_cache: { top_k: 2, dtype: 'fp16' } },
        train_micro_batch_size_per_gpu: 8,
        output_dir: lossy,
      }),
      2,
    );
    expect(maxRelDiff(weights(lossy), weights(live))).toBeGreaterThan(1e-6);
  });
});

describe('multi-stage jobs', () => {
  it('teacher → distilled (2 seeds, {stage: teacher}) → self-distilled from a checkpoint → scratch: one table', async () => {
    const out = join(tmp, 'staged');
    const job: Job = {
      name: 'staged',
      backend: 'cpu',
      seed: 3,
      data: { dataset: 'mnist' },
      train_micro_batch_size_per_gpu: 16,
      optimizer: { type: 'Adam', params: { lr: 0.003 } },
      steps: 30,
      steps_per_print: 1000,
      output_dir: out,
      checkpoint: { dir: join(tmp, 'staged-ckpt'), every_steps: 30 },
      stages: [
        {
          name: 'teacher',
          model: { type: 'cnn', input: [28, 28, 1], conv: [{ filters: 4, kernel: 3 }], classes: 10 },
          steps: 40,
        },
        {
          name: 'distilled',
          model: { type: 'mlp', layers: [784, 16, 10] },
          seeds: [1, 2],
          teachers: [{ stage: 'teacher' }],
          distillation: { temperature: 3, is_caching_logits: true },
        },
        {
          name: 'self',
          model: { type: 'mlp', layers: [784, 16, 10] },
          teachers: [{ checkpoint: join(tmp, 'staged-ckpt', 'distilled', 'seed-1') }],
          distillation: { temperature: 2, hard_label_weight: 0.5 },
        },
        { name: 'scratch', model: { type: 'mlp', layers: [784, 16, 10] }, seeds: [1, 2] },
      ],
    };
    const reports = await reportsOf(job, 2);
    const stages = reports.filter((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport[];
    expect(stages).toHaveLength(1);
    const rows = stages[0].rows;
    expect(rows.map((r) => [r.stage, r.model, r.objective, r.seeds])).toEqual([
      ['teacher', 'cnn', 'cross_entropy', [3]],
      ['distilled', 'mlp', 'distillation', [1, 2]],
      ['self', 'mlp', 'distillation', [3]],
      ['scratch', 'mlp', 'cross_entropy', [1, 2]],
    ]);
    expect(rows[0].parameters).toBe(3 * 3 * 4 + 4 + 14 * 14 * 4 * 10 + 10);
    expect(rows[1].parameters).toBe(784 * 16 + 16 + 16 * 10 + 10);
    for (const r of rows) {
      expect(r.accuracy_mean).toBeGreaterThan(0.25); // 30 steps: far from chance (0.1), far from done
      expect(r.size_bytes).toBeGreaterThan(r.parameters * 4);
      expect(r.inference_samples_per_s).toBeGreaterThan(0);
      expect(r.train_s).toBeGreaterThan(0);
    }
    const [a, b] = rows[1].accuracies;
    expect(rows[1].accuracy_mean).toBeCloseTo((a + b) / 2, 12);
    expect(rows[1].accuracy_std).toBeCloseTo(Math.abs(a - b) / Math.SQRT2, 12);
    expect(rows[1].teachers).toBe('stage teacher');
    for (const dir of ['teacher', 'distilled/seed-1', 'distilled/seed-2', 'self', 'scratch/seed-2']) {
      expect(existsSync(join(out, dir, KD_MODEL_JSON))).toBe(true);
    }
    // The seeds really differ, and a stage's model is the Net it reports.
    expect(
      maxRelDiff(weights(join(out, 'distilled/seed-1')), weights(join(out, 'distilled/seed-2'))),
    ).toBeGreaterThan(1e-3);
    const table = jobStagesTable(stages[0]);
    expect(table).toMatch(/^stage\s+model\s+objective/);
    expect(table).toMatch(/distilled\s+mlp\s+distillation\s+2\s+\d+\.\d\d ± \d+\.\d\d/);
  });

  it('a teacher naming an unknown or a later stage fails before any worker starts, naming the field and line', () => {
    const file = join(tmp, 'bad-stages.yaml');
    writeFileSync(
      file,
      [
        'name: bad',
        'data: {dataset: mnist}',
        'train_micro_batch_size_per_gpu: 16',
        'optimizer: {type: Adam, params: {lr: 0.001}}',
        'steps: 5',
        'model: {type: mlp, layers: [784, 16, 10]}',
        'stages:',
        '  - name: student',
        '    teachers: [{stage: teacher}]',
        '    distillation: {temperature: 2}',
        '  - name: teacher',
        '  - name: other',
        '    teachers: [{stage: techer}]',
        '    distillation: {temperature: 2}',
        '',
      ].join('\n'),
    );
    let err: unknown;
    try {
      launch(file, { nproc: 2 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as ConfigError).message;
    expect(message).toContain(`${file}:9:24: stages.0.teachers.0.stage:`);
    expect(message).toContain('as its teacher: it must be an earlier stage');
    expect(message).toContain(`${file}:13:24: stages.2.teachers.0.stage:`);
    expect(message).toContain("no stage named 'techer'");
  });

  it('a teacher that cannot be found, or scores other classes, fails before any worker starts', async () => {
    expect(() =>
      launch(distillJob({ teachers: [{ model_dir: join(tmp, 'nowhere') }], distillation: {} }), { nproc: 1 }),
    ).toThrow(/teachers\.0\.model_dir: no kd-launch model at/);
    const five = ModelSpec.parse({ type: 'mlp', layers: [784, 8, 5] });
    const dir = join(tmp, 'five-classes');
    await saveNetModel(dir, five, buildNet(five).init(1));
    expect(() =>
      launch(distillJob({ teachers: [{ model_dir: dir }], distillation: {} }), { nproc: 1 }),
    ).toThrow(/teachers\.0: the teacher \(mlp\) has 5 outputs, the student 10/);
  });
});

describe('the Transformer and seqcls in a job', () => {
  it('a Transformer that does not fit the sequence task is refused before any worker starts', () => {
    const job = (model: Job): Job =>
      distillJob({
        teachers: undefined,
        data: { dataset: 'seqcls', vocab: 20, seq_len: 16, classes: 8 },
        model: {
          type: 'transformer',
          vocab: 20,
          seq_len: 16,
          dim: 8,
          heads: 2,
          layers: 1,
          ffn: 8,
          classes: 8,
          ...model,
        },
      });
    expect(launch(job({}), { nproc: 2, dryRun: true }).plan.batch?.trainBatchSize).toBe(16);
    expect(() => launch(job({ seq_len: 12, vocab: 10 }), { nproc: 2 })).toThrow(
      /model\.seq_len: the Transformer takes 12 tokens but seqcls samples have 16[\s\S]*model\.vocab: the Transformer embeds 10 token ids but seqcls uses 20/,
    );
    expect(() =>
      launch(
        distillJob({
          teachers: undefined,
          model: {
            type: 'transformer',
            vocab: 20,
            seq_len: 784,
            dim: 8,
            heads: 2,
            layers: 1,
            ffn: 8,
            classes: 10,
          },
        }),
        {
          nproc: 1,
        },
      ),
    ).toThrow(/model\.type: mnist samples are not token ids/);
  });
});

describe('model directories', () => {
  it('saveNetModel → loadNetModel returns the same spec and bits; tf.loadLayersModel predicts what the Net computes', async () => {
    const { test } = loadMnist();
    const all = Int32Array.from({ length: 8 }, (_, i) => i * 100);
    const { inputs } = gatherBatch(test, all, 0, 8);
    for (const raw of [
      { type: 'mlp', layers: [784, 12, 10], dropout: 0.1 },
      { type: 'cnn', input: [28, 28, 1], conv: [{ filters: 3, kernel: 3 }], dense: [8], classes: 10 },
    ]) {
      const spec = ModelSpec.parse(raw);
      const dir = join(tmp, `round-${spec.type}`);
      const values = buildNet(spec).init(9);
      const bytes = await saveNetModel(dir, spec, values);
      expect(bytes).toBeGreaterThan(values.reduce((n, v) => n + 4 * v.length, 0));
      const back = loadNetModel(dir);
      expect(back.spec).toEqual(spec);
      expect(back.values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))).toEqual(
        values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)),
      );
      const x = tf.tensor(inputs, [8, ...back.net.inputShape]);
      const params = back.net.blocks.map((b, i) => {
        const from = back.net.blocks.slice(0, i).reduce((n, p) => n + p.params.length, 0);
        return b.params.map((p, j) => tf.tensor(back.values[from + j], [...p.shape]));
      });
      const ours = forwardBlocks(back.net, params, x, { training: false, seed: 0 }).logits;
      const layers = await tf.loadLayersModel(modelDirHandler(dir));
      const theirs = layers.predict(x) as tf.Tensor;
      expect(tf.max(tf.abs(tf.sub(ours, theirs))).dataSync()[0]).toBeLessThan(1e-5);
      layers.dispose();
      tf.dispose([x, ours, theirs, ...params.flat()]);
      // Saving again replaces the directory whole.
      await saveNetModel(dir, spec, buildNet(spec).init(10));
      expect(loadNetModel(dir).values[0]).not.toEqual(values[0]);
    }
  });

  it('a Transformer (no tfjs layers form) round-trips through kd-model.json and weights.bin alone', async () => {
    const spec = ModelSpec.parse({
      type: 'transformer',
      vocab: 10,
      seq_len: 6,
      dim: 8,
      heads: 2,
      layers: 2,
      ffn: 16,
      classes: 3,
    });
    const dir = join(tmp, 'round-transformer');
    const values = buildNet(spec).init(4);
    await saveNetModel(dir, spec, values);
    expect(existsSync(join(dir, 'model.json'))).toBe(false);
    const back = loadNetModel(dir);
    expect(back.spec).toEqual(spec);
    expect(back.net.kind).toBe('transformer');
    expect(back.values).toEqual(values);
  });

  it('a directory without kd-model.json, or with a layout that does not fit its spec, is refused by name', async () => {
    expect(() => loadNetModel(join(tmp, 'nothing'))).toThrow(
      /no kd-launch model at .*kd-model\.json does not exist/,
    );
    const spec = ModelSpec.parse({ type: 'mlp', layers: [784, 12, 10] });
    const dir = join(tmp, 'tampered');
    await saveNetModel(dir, spec, buildNet(spec).init(1));
    const meta = JSON.parse(readFileSync(join(dir, KD_MODEL_JSON), 'utf8'));
    meta.model.layers = [784, 13, 10];
    writeFileSync(join(dir, KD_MODEL_JSON), JSON.stringify(meta));
    expect(() => loadNetModel(dir)).toThrow(/its tensors do not match the mlp/);
  });
});
