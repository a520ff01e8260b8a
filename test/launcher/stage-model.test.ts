/**
 * `model: {stage: NAME}`: a stage trains on from an earlier stage's model, seed by seed, over 2 worker processes.
 * What it writes is that model pruned after one tiny step, not a fresh one; references that cannot be followed are
 * refused before any worker starts, naming the field and line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { prunedCount } from '../../src/engine/pruning.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import { refusalOf, reportsOf } from './compare.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-stage-model-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const maxDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('a stage that starts from an earlier stage’s model', () => {
  it('seed N starts from seed N’s model: one 1e-6 step later it is that model, half of each kernel zeroed', async () => {
    const out = join(tmp, 'out');
    const reports = await reportsOf(
      {
        name: 'chain',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 24,
        output_dir: out,
        model: { type: 'mlp', layers: [784, 16, 10] },
        stages: [
          { name: 'trained', seeds: [1, 2] },
          {
            name: 'pruned',
            seeds: [1, 2],
            model: { stage: 'trained' },
            optimizer: { type: 'SGD', params: { lr: 1e-6 } },
            steps: 1,
            pruning: { schedule: 'constant', sparsity: 0.5 },
          },
        ],
      },
      2,
    );
    const report = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    const [trained, pruned] = report.rows;
    expect(pruned.model).toBe('mlp');
    expect(pruned.parameters).toBe(trained.parameters);
    const seeds = [1, 2].map((seed) => ({
      trained: loadNetModel(join(out, 'trained', `seed-${seed}`)).values,
      pruned: loadNetModel(join(out, 'pruned', `seed-${seed}`)).values,
    }));
    for (const { trained: before, pruned: after } of seeds) {
      for (const i of [0, 2]) {
        const kernel = after[i];
        expect(kernel.filter((v) => v === 0).length).toBe(prunedCount(kernel.length, 0.5));
        // What survived is the trained weight, moved by one step of 1e-6; what was cut was among the smallest.
        const kept = before[i].map((v, j) => (kernel[j] === 0 ? 0 : v));
        expect(maxDiff(kernel, kept)).toBeLessThan(1e-4);
        const cutMax = before[i].reduce((m, v, j) => (kernel[j] === 0 ? Math.max(m, Math.abs(v)) : m), 0);
        const keptMin = before[i].reduce((m, v, j) => (kernel[j] !== 0 ? Math.min(m, Math.abs(v)) : m), 1e9);
        expect(cutMax).toBeLessThanOrEqual(keptMin + 1e-4);
      }
      expect(maxDiff(after[1], before[1])).toBeLessThan(1e-4);
    }
    // Seed 2 started from seed 2's model, not seed 1's.
    expect(maxDiff(seeds[1].trained[1], seeds[0].trained[1])).toBeGreaterThan(1e-2);
    // Half its kernels cut after training, the model still does better than chance.
    expect(pruned.accuracy_mean).toBeGreaterThan(0.2);
  });

  it('layer reduction: a stage from hidden layers 0 and 2 of a 784-16-16-16-10 MLP is 784-16-16-10 from those layers', async () => {
    const out = join(tmp, 'reduced');
    const reports = await reportsOf(
      {
        name: 'reduce',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.002 } },
        steps: 24,
        output_dir: out,
        model: { type: 'mlp', layers: [784, 16, 16, 16, 10] },
        stages: [
          { name: 'deep' },
          {
            name: 'shallow',
            model: { stage: 'deep', layers: [0, 2] },
            optimizer: { type: 'SGD', params: { lr: 1e-6 } },
            steps: 1,
          },
        ],
      },
      2,
    );
    const report = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    expect(report.rows[1].parameters).toBe(report.rows[0].parameters - (16 * 16 + 16));
    const deep = loadNetModel(join(out, 'deep')).values;
    const shallow = loadNetModel(join(out, 'shallow'));
    expect(shallow.spec).toMatchObject({ type: 'mlp', layers: [784, 16, 16, 10] });
    // One step of 1e-6 from deep's layers 0, 2 and its output layer.
    const diffs = [0, 1, 4, 5, 6, 7].map((from, i) => maxDiff(shallow.values[i], deep[from]));
    expect(Math.max(...diffs)).toBeLessThan(1e-4);
  });

  const refusal = (name: string, stages: string[]) => refusalOf(tmp, name, ['stages:', ...stages]);

  it('a reduction to layers the model does not have, or of a CNN, is refused with its line', () => {
    expect(refusal('outside', ['  - {name: a}', '  - {name: b, model: {stage: a, layers: [1]}}'])).toMatch(
      /outside\.yaml:9:\d+: stages\.1\.model\.layers: stage 'b' reduces stage 'a': hidden layer 1 does not exist: the mlp has 1 \(0 … 0\)/,
    );
    const cnn = '{type: cnn, input: [28, 28, 1], conv: [{filters: 2, kernel: 3}], classes: 10}';
    expect(
      refusal('cnn', [`  - {name: a, model: ${cnn}}`, '  - {name: b, model: {stage: a, layers: [0]}}']),
    ).toMatch(/cnn\.yaml:9:\d+: stages\.1\.model\.layers: .*not of a cnn/);
  });

  it('a model of a later stage, of no stage, or of a seed the stage did not run is refused with its line', () => {
    expect(refusal('later', ['  - {name: a, model: {stage: b}}', '  - {name: b}'])).toMatch(
      /later\.yaml:8:\d+: stages\.0\.model\.stage: stage 'a' \(stage 0\) takes stage 'b' \(stage 1\) as its model: it must be an earlier stage/,
    );
    expect(refusal('none', ['  - {name: a}', '  - {name: b, model: {stage: c}}'])).toMatch(
      /none\.yaml:9:\d+: stages\.1\.model\.stage: stage 'b': no stage named 'c' \(stages: a, b\)/,
    );
    expect(
      refusal('seed', ['  - {name: a, seeds: [1, 2]}', '  - {name: b, model: {stage: a, seed: 3}}']),
    ).toMatch(/seed\.yaml:9:\d+: stages\.1\.model\.seed: stage 'a' has no run with seed 3/);
    expect(refusal('typo', ['  - {name: a}', '  - {name: b, model: {stage: a, sed: 3}}'])).toMatch(
      /typo\.yaml:9:\d+: stages\.1\.model\.sed: unknown field 'sed'/,
    );
  });

  it('a {stage} model at the top level is refused: it belongs in a stage', () => {
    const file = join(tmp, 'top.yaml');
    writeFileSync(
      file,
      [
        'name: top',
        'data: {dataset: mnist}',
        'train_micro_batch_size_per_gpu: 16',
        'optimizer: {type: Adam, params: {lr: 0.001}}',
        'steps: 5',
        'model: {stage: a}',
        '',
      ].join('\n'),
    );
    expect(() => launch(file, { nproc: 2 })).toThrow(
      /top\.yaml:6:\d+: model\.type: a \{stage: NAME\} model is an earlier stage's: give it in a stage of 'stages:'/,
    );
  });
});
