/**
 * prepare() over real worker processes: with an objective of the user's own (label-smoothed cross-entropy at
 * smoothing 0 trains exactly as the default objective, cross-entropy, does, and at smoothing 0.5 differently), and on
 * data the script builds in code (a Dataset, tf.data.Datasets), bad data refused in one line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { reportsOf } from './compare.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'test', 'fixtures', 'prepare-objective.worker.ts');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs the fixture in a job directory of its own (its `save('out')` lands there); the losses and weights. */
async function run(smoothing: number | undefined) {
  const dir = mkdtempSync(join(ROOT, 'test', 'fixtures', '.prepare-'));
  dirs.push(dir);
  const file = join(dir, 'job.json');
  writeFileSync(file, JSON.stringify({ name: 'prepare-objective', script: SCRIPT, args: { smoothing } }));
  const [report] = (await reportsOf(file, 2)) as { losses: number[] }[];
  return { losses: report.losses, weights: loadNetModel(join(dir, 'out')).values };
}

describe('prepare() with an objective of your own', () => {
  it('is the objective the steps minimise', async () => {
    const plain = await run(undefined);
    const zero = await run(0);
    const half = await run(0.5);
    expect(plain.losses).toHaveLength(5);
    // Smoothing 0 is cross-entropy: the same losses and the same weights, bit for bit.
    expect(zero.losses).toEqual(plain.losses);
    expect(zero.weights.map((w) => Array.from(w))).toEqual(plain.weights.map((w) => Array.from(w)));
    // Smoothing 0.5 is another loss: another value at the first step (same weights, softer targets), other weights.
    expect(half.losses[0]).not.toBe(plain.losses[0]);
    expect(half.weights[0]).not.toEqual(plain.weights[0]);
  });
});

describe('prepare() on data of your own', () => {
  const SCRIPT_DATA = join(ROOT, 'test', 'fixtures', 'prepare-data.worker.ts');
  const job = (data: string) => ({ name: `prepare-${data}`, script: SCRIPT_DATA, args: { data } });

  it('trains an MLP on a Dataset read through get(i), each rank reading only its share of each step', async () => {
    const [report] = (await reportsOf(job('dataset'), 2)) as {
      accuracy: number;
      steps: number;
      stepReads: number;
    }[];
    // 600 samples, test_fraction 0.2: 480 train, 15 steps of 2 × 16 per epoch, 8 epochs. Measured: 99.17%.
    expect(report.steps).toBe(120);
    expect(report.stepReads).toBe(120 * 16);
    expect(report.accuracy).toBeGreaterThanOrEqual(0.95);
  });

  it('trains on tf.data.Datasets, read into memory', async () => {
    const [report] = (await reportsOf(job('tfdata'), 2)) as { accuracy: number; steps: number }[];
    // The same 480 training points, the other 120 the test set. Measured: 97.50%.
    expect(report.steps).toBe(120);
    expect(report.accuracy).toBeGreaterThanOrEqual(0.95);
  });

  it.each([
    ['ragged', 'prepare(): data: sample 7: x has 3 values, sample 0 has 2: every sample is the same size'],
    ['label', 'prepare(): data: sample 11: y is 3, outside the 3 classes (labels 0 … 2)'],
    ['model', "prepare(): model: the model takes 3 values per sample but data's samples have 2"],
    [
      'ranks',
      'prepare(): data: the ranks hold 479 to 480 training samples: every rank must build the same samples',
    ],
  ])('refuses %s data with one line', async (data, line) => {
    const err = (await launch(job(data), { nproc: 2 }).result.catch((x: unknown) => x)) as JobFailedError;
    expect(err).toBeInstanceOf(JobFailedError);
    expect(err.failure?.stderrTail.join('\n')).toContain(`ConfigError: ${line}`);
  });
});
