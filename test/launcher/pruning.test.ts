/**
 * Pruning as a user runs it: a job stage that prunes while it distils, over 2 worker processes, ends with each
 * weight matrix at exactly its sparsity in the model it writes, and the stage table counts the non-zero
 * parameters; a sparsity of 1 is refused before any worker starts, naming the field and line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { jobStagesTable } from '../../launcher/render.ts';
import { tf } from '../../src/backend/tf.ts';
import { ConfigError } from '../../src/config/errors.ts';
import type { ModelSpec } from '../../src/config/schema.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { prunedCount } from '../../src/engine/pruning.ts';
import { toLayersModel } from '../../src/models/build.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import { refusalOf, reportsOf } from './compare.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-prune-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Test accuracy of a model on MNIST, through its tfjs layers form. */
function accuracyOf(spec: ModelSpec, values: readonly Float32Array[]): number {
  const { test } = loadMnist();
  const layers = toLayersModel(spec, values);
  const shape = spec.type === 'cnn' ? [test.length, 28, 28, 1] : [test.length, 784];
  const x = tf.tensor(test.inputs, shape);
  const predicted = tf.tidy(() => tf.argMax(layers.predict(x) as tf.Tensor, -1).dataSync());
  x.dispose();
  layers.dispose();
  return Array.from(predicted).filter((p, i) => p === test.labels[i]).length / test.length;
}

describe('pruning in a job', () => {
  it('a stage pruned while distilling: every weight matrix exactly 75 % zero, counted in the table', async () => {
    const out = join(tmp, 'out');
    const reports = await reportsOf(
      {
        name: 'prune',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 24,
        output_dir: out,
        model: { type: 'mlp', layers: [784, 16, 10] },
        stages: [
          { name: 'teacher', model: { type: 'mlp', layers: [784, 32, 10] } },
          {
            name: 'pruned',
            teachers: [{ stage: 'teacher' }],
            distillation: { temperature: 2 },
            pruning: { sparsity: 0.75, frequency: 5 },
          },
        ],
      },
      2,
    );
    const stages = reports.filter((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport[];
    const [teacher, pruned] = stages[0].rows;
    const { values } = loadNetModel(join(out, 'pruned'));
    const [k0, b0, k1, b1] = values;
    for (const kernel of [k0, k1]) {
      expect(kernel.filter((v) => v === 0).length).toBe(prunedCount(kernel.length, 0.75));
    }
    // Biases are not pruned.
    const nonZero = (a: Float32Array) => a.filter((v) => v !== 0).length;
    expect(pruned.nonzero_parameters).toBe(nonZero(k0) + nonZero(b0) + nonZero(k1) + nonZero(b1));
    expect(pruned.objective).toBe('distillation');
    expect(pruned.accuracy_mean).toBeGreaterThan(0.25);
    expect(teacher.nonzero_parameters).toBeUndefined();
    expect(jobStagesTable(stages[0])).toMatch(
      /pruned\s+mlp\s+distillation\s+1\s+[\d.]+\s+[\d.]+\s+12,730\s+3,\d{3}/,
    );
  });

  it('units pruning of half the hidden units writes the half-size MLP, with the accuracy of the masked one', async () => {
    const out = join(tmp, 'units');
    const reports = await reportsOf(
      {
        name: 'units',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 40,
        output_dir: out,
        model: { type: 'mlp', layers: [784, 32, 16, 10] },
        stages: [
          { name: 'dense' },
          {
            name: 'half',
            model: { stage: 'dense' },
            steps: 12,
            pruning: { structure: 'units', schedule: 'constant', sparsity: 0.5, frequency: 4 },
          },
        ],
      },
      2,
    );
    const stages = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    const [dense, half] = stages.rows;
    const model = loadNetModel(join(out, 'half'));
    expect(model.spec).toMatchObject({ type: 'mlp', layers: [784, 16, 8, 10] });
    const parameters = 784 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10;
    expect(half.parameters).toBe(parameters);
    expect(dense.parameters).toBe(784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10);
    // The written model is the one the table evaluated (with its pruned units masked), now without them.
    expect(Math.abs(accuracyOf(model.spec, model.values) - half.accuracy_mean)).toBeLessThanOrEqual(0.001);
  });

  it('units pruning of a CNN writes it with half its channels and hidden units, with the masked one’s accuracy', async () => {
    const out = join(tmp, 'cnn-units');
    const reports = await reportsOf(
      {
        name: 'cnn-units',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 12,
        output_dir: out,
        model: {
          type: 'cnn',
          input: [28, 28, 1],
          conv: [{ filters: 4, kernel: 3 }],
          pool: 4,
          dense: [8],
          classes: 10,
        },
        pruning: { structure: 'units', schedule: 'constant', sparsity: 0.5, frequency: 4 },
      },
      2,
    );
    const summary = reports.find((d) => (d as { kind?: string }).kind === 'summary') as {
      test_accuracy: number;
    };
    const model = loadNetModel(out);
    expect(model.spec).toMatchObject({ type: 'cnn', conv: [{ filters: 2 }], dense: [4] });
    expect(Math.abs(accuracyOf(model.spec, model.values) - summary.test_accuracy)).toBeLessThanOrEqual(0.001);
  });

  it('heads pruning writes the Transformer with half its heads in each layer, which a later stage trains on', async () => {
    const out = join(tmp, 'heads');
    const transformer = {
      type: 'transformer',
      vocab: 20,
      seq_len: 16,
      dim: 8,
      heads: 4,
      layers: 2,
      ffn: 16,
      classes: 8,
    };
    const reports = await reportsOf(
      {
        name: 'heads',
        data: { dataset: 'seqcls' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 12,
        output_dir: out,
        model: transformer,
        stages: [
          { name: 'whole' },
          {
            name: 'half',
            model: { stage: 'whole' },
            pruning: { structure: 'heads', schedule: 'constant', sparsity: 0.5, frequency: 4 },
          },
          { name: 'tuned', model: { stage: 'half' }, steps: 2 },
        ],
      },
      2,
    );
    const stages = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    const [whole, half, tuned] = stages.rows;
    expect(loadNetModel(join(out, 'half')).spec).toMatchObject({ layer_heads: [2, 2] });
    expect(loadNetModel(join(out, 'tuned')).spec).toMatchObject({ layer_heads: [2, 2] });
    // Each layer loses 2 heads of 2 (query, key, value) × (8 × 2 + 2) and 2 × 8 of the output projection.
    const perHead = 3 * (8 * 2 + 2) + 2 * 8;
    expect(half.parameters).toBe(whole.parameters - 2 * 2 * perHead);
    expect(tuned.parameters).toBe(half.parameters);
  });

  it('units pruning of a model without hidden dense layers is refused before any worker starts', () => {
    const file = join(tmp, 'units.yaml');
    writeFileSync(
      file,
      [
        'name: units',
        'data: {dataset: mnist}',
        'train_micro_batch_size_per_gpu: 16',
        'optimizer: {type: Adam, params: {lr: 0.001}}',
        'steps: 5',
        'model: {type: mlp, layers: [784, 10]}',
        'pruning: {structure: units, sparsity: 0.5}',
        '',
      ].join('\n'),
    );
    expect(() => launch(file, { nproc: 2 })).toThrow(
      /units\.yaml:7:\d+: pruning: units pruning removes a CNN's channels and hidden units, or a whole MLP's hidden units, and this model has no hidden layer/,
    );
    expect(refusalOf(tmp, 'heads', ['pruning: {structure: heads, sparsity: 0.5}'])).toMatch(
      /heads\.yaml:7:\d+: pruning: heads pruning removes a Transformer's attention heads, and this model is a mlp/,
    );
  });

  it('a sparsity of 1 is refused before any worker starts, naming the field and line', () => {
    const file = join(tmp, 'bad.yaml');
    writeFileSync(
      file,
      [
        'name: bad',
        'data: {dataset: mnist}',
        'train_micro_batch_size_per_gpu: 16',
        'optimizer: {type: Adam, params: {lr: 0.001}}',
        'steps: 5',
        'model: {type: mlp, layers: [784, 16, 10]}',
        'pruning: {sparsity: 1}',
        '',
      ].join('\n'),
    );
    // Refused while the job is planned: launch() throws before it starts anything.
    const err = (() => {
      try {
        launch(file, { nproc: 2 });
      } catch (x) {
        return x;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(
      /bad\.yaml:7:\d+: pruning\.sparsity: a sparsity is a fraction in \[0, 1\): 1 would leave no weight/,
    );
  });
});
