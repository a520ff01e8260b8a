/**
 * A TensorFlow.js model of the user's own in training jobs, over real worker processes: trained at world 2 it
 * equals the same model trained in one process on the doubled micro-batch (ZeRO 0 and 3), it exports back to its
 * own topology for tf.loadLayersModel, it serves as a teacher as saved, and what kd-launch cannot run is refused
 * before any worker starts, naming the layer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { loadModel, saveModel } from '../../src/models/save.ts';
import { maxRelDiff, summaryOf } from './compare.ts';
import { useReferenceKernels } from './reference-kernels.ts';

let tmp: string;
let userModel: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-tfjs-job-'));
  userModel = join(tmp, 'user-cnn');
  // The user's model, saved with tfjs' own model.save: MNIST digits as 28×28 images, a softmax classifier.
  // Seeded initialisers: the same starting weights on every run.
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed }) });
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [28, 28, 1],
        filters: 4,
        kernelSize: 3,
        strides: 2,
        activation: 'relu',
        ...init(1),
      }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 16, activation: 'relu', ...init(2) }),
      tf.layers.dropout({ rate: 0 }),
      tf.layers.dense({ units: 10, activation: 'softmax', ...init(3) }),
    ],
  });
  await saveModel(model, userModel);
  model.dispose();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function job(over: Record<string, unknown>): Record<string, unknown> {
  return {
    name: 'tfjs-model-test',
    backend: 'cpu',
    seed: 2,
    model: { path: userModel },
    data: { dataset: 'mnist', shuffle: true },
    optimizer: { type: 'Adam', params: { lr: 0.002 } },
    steps: 8,
    steps_per_print: 1000,
    ...over,
  };
}

describe('a user tfjs model in a job', () => {
  // Each case compares GEMMs of different row counts (see reference-kernels.ts).
  useReferenceKernels();

  for (const stage of [0, 3]) {
    it(`ZeRO ${stage}: world 2 × micro-batch 8 equals world 1 × micro-batch 16 (1e-5), exported to the user's topology`, async () => {
      const one = join(tmp, `w1-z${stage}`);
      const two = join(tmp, `w2-z${stage}`);
      const zero = { stage };
      await summaryOf(
        job({ train_micro_batch_size_per_gpu: 16, zero_optimization: zero, output_dir: one }),
        1,
      );
      const s = await summaryOf(
        job({ train_micro_batch_size_per_gpu: 8, zero_optimization: zero, output_dir: two }),
        2,
      );
      expect(s.zero_stage).toBe(stage);
      const w1 = loadNetModel(one).values;
      const w2 = loadNetModel(two).values;
      expect(maxRelDiff(w2, w1)).toBeLessThan(1e-5);
      // It trained: every layer's kernel moved from the saved one.
      const saved = loadNetModel(userModel).values;
      for (const k of [0, 2, 4]) expect(maxRelDiff([w1[k]], [saved[k]])).toBeGreaterThan(1e-3);
      // The export is the user's model with the trained weights, softmax and all.
      const exported = await loadModel(two);
      expect(exported.layers.map((l) => l.getClassName())).toEqual([
        'Conv2D',
        'MaxPooling2D',
        'Flatten',
        'Dense',
        'Dropout',
        'Dense',
      ]);
      expect(exported.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(
        w2.map((v) => Array.from(v)),
      );
      exported.dispose();
    });
  }

  it('serves as a teacher as model.save wrote it', async () => {
    const s = await summaryOf(
      job({
        model: { type: 'mlp', layers: [784, 16, 10] },
        train_micro_batch_size_per_gpu: 16,
        teachers: [{ model_dir: userModel }],
        distillation: { temperature: 2 },
      }),
      2,
    );
    expect(s.objective).toBe('distillation');
  });

  it('is refused before any worker starts when kd-launch cannot run it or it does not fit the data', async () => {
    const bn = join(tmp, 'user-bn');
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [784], units: 8 }),
        tf.layers.batchNormalization({ name: 'norm' }),
        tf.layers.dense({ units: 10 }),
      ],
    });
    await saveModel(model, bn);
    model.dispose();
    expect(() =>
      launch(job({ model: { path: bn }, train_micro_batch_size_per_gpu: 8 }), { nproc: 2 }),
    ).toThrow(/model\.path: .*user-bn: layer 'norm' \(BatchNormalization\) keeps moving statistics/);
    const five = join(tmp, 'user-five');
    const m5 = tf.sequential({ layers: [tf.layers.dense({ inputShape: [784], units: 5 })] });
    await saveModel(m5, five);
    m5.dispose();
    expect(() =>
      launch(job({ model: { path: five }, train_micro_batch_size_per_gpu: 8 }), { nproc: 2 }),
    ).toThrow(/model\.path: the model has 5 outputs but mnist has 10 classes/);
  });
});
