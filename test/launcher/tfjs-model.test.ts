/**
 * A TensorFlow.js model of the user's own in training jobs, over real worker processes: trained at world 2 it
 * equals the same model trained in one process on the doubled micro-batch (ZeRO 0 and 3), it exports back to its
 * own topology for tf.loadLayersModel, it serves as a teacher as saved, and what kd-launch cannot run is refused
 * before any worker starts, naming the layer.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportModel } from '../../launcher/export.ts';
import { launch } from '../../launcher/launch.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { loadModel, saveModel } from '../../src/models/save.ts';
import { readTfjsModel } from '../../src/models/tfjs-dir.ts';
import { expectSameBits, maxRelDiff, summaryOf } from './compare.ts';
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
        useBias: false,
        ...init(1),
      }),
      // No bias before a BatchNormalization (its batch mean cancels it), as Keras models are written.
      tf.layers.batchNormalization({ momentum: 0.9 }),
      tf.layers.activation({ activation: 'relu' }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 16, useBias: false, name: 'features', ...init(2) }),
      tf.layers.batchNormalization(),
      tf.layers.activation({ activation: 'relu' }),
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

  // SGD: Adam turns the rounding noise of a gradient that is 0 in exact arithmetic into ±lr, and
  // BatchNormalization makes such gradients (a weight on a constant input, MNIST's blank border, feeding a
  // BatchNormalization whose batch mean removes it); under SGD an error stays at its rounding size.
  const sgd = { optimizer: { type: 'SGD', params: { lr: 0.05, momentum: 0.9 } } };
  /** The reference of both stages: world 1 without ZeRO (at world 1 a stage shards nothing), run once. */
  let reference: Promise<string> | undefined;
  const worldOne = () => {
    const one = join(tmp, 'w1');
    reference ??= summaryOf(job({ ...sgd, train_micro_batch_size_per_gpu: 16, output_dir: one }), 1).then(
      () => one,
    );
    return reference;
  };

  for (const stage of [0, 3]) {
    it(`ZeRO ${stage}: world 2 × micro-batch 8 equals world 1 × micro-batch 16 (1e-5), exported to the user's topology`, async () => {
      const one = await worldOne();
      const two = join(tmp, `w2-z${stage}`);
      const common = { ...sgd, zero_optimization: { stage } };
      const s = await summaryOf(job({ ...common, train_micro_batch_size_per_gpu: 8, output_dir: two }), 2);
      expect(s.zero_stage).toBe(stage);
      const w1 = loadNetModel(one).values;
      const w2 = loadNetModel(two).values;
      expect(maxRelDiff(w2, w1)).toBeLessThan(1e-5);
      // It trained: every layer's kernel moved from the saved one.
      const saved = loadNetModel(userModel).values;
      const { weightNames } = readTfjsModel(userModel);
      const moved = ['conv2d_Conv2D1/kernel', 'features/kernel', 'dense_Dense1/kernel'];
      const norms = weightNames.filter((n) => n.endsWith('moving_mean') || n.endsWith('moving_variance'));
      expect(norms).toHaveLength(4);
      for (const name of [...moved, ...norms]) {
        const k = weightNames.indexOf(name);
        expect(maxRelDiff([w1[k]], [saved[k]]), name).toBeGreaterThan(1e-3);
      }
      // The export is the user's model with the trained weights, softmax and all.
      const exported = await loadModel(two);
      expect(exported.layers.map((l) => l.getClassName())).toEqual([
        'Conv2D',
        'BatchNormalization',
        'Activation',
        'MaxPooling2D',
        'Flatten',
        'Dense',
        'BatchNormalization',
        'Activation',
        'Dropout',
        'Dense',
      ]);
      // By name: tfjs lists trainable weights first, the moving statistics after them.
      const byName = new Map(exported.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]));
      expect(weightNames.map((n) => byName.get(n))).toEqual(w2.map((v) => Array.from(v)));
      exported.dispose();
    });
  }

  it('pipelined (2 stages × 2 replicas, 1F1B, activation checkpointing) equals data parallel on the same micro-batches (1e-5)', async () => {
    // Replica r's micro-batch m is the same 4 samples in both runs, and each BatchNormalization sums its statistics
    // over the two replicas' (the stage's data-parallel group) as over the two data-parallel ranks.
    const piped = join(tmp, 'piped');
    const plain = join(tmp, 'plain');
    const common = { optimizer: { type: 'SGD', params: { lr: 0.05, momentum: 0.9 } }, steps: 6 };
    await summaryOf(
      job({
        ...common,
        train_micro_batch_size_per_gpu: 4,
        pipeline: { stages: 2, micro_batches: 2, schedule: '1f1b' },
        activation_checkpointing: { enabled: true, every_n_layers: 2 },
        output_dir: piped,
      }),
      4,
    );
    await summaryOf(
      job({
        ...common,
        train_micro_batch_size_per_gpu: 4,
        gradient_accumulation_steps: 2,
        output_dir: plain,
      }),
      2,
    );
    expect(maxRelDiff(loadNetModel(piped).values, loadNetModel(plain).values)).toBeLessThan(1e-5);
  });

  it('stopped at step 4 and resumed to 8 (ZeRO 2): the same bits as an uninterrupted run, moving statistics included', async () => {
    const ckpt = join(tmp, 'ckpt-bn');
    const common = { zero_optimization: { stage: 2 }, train_micro_batch_size_per_gpu: 8, steps: 8 };
    const full = join(tmp, 'bn-full');
    const resumed = join(tmp, 'bn-resumed');
    await summaryOf(job({ ...common, output_dir: full }), 2);
    await summaryOf(job({ ...common, steps: 4, checkpoint: { dir: ckpt, every_steps: 4 } }), 2);
    await summaryOf(
      job({ ...common, checkpoint: { dir: ckpt, every_steps: 4 }, resume: ckpt, output_dir: resumed }),
      2,
    );
    expectSameBits(loadNetModel(resumed).values, loadNetModel(full).values);
    // `kd-launch export` of the last checkpoint writes the user's topology with those weights, as output_dir does.
    const exported = (await exportModel(ckpt, join(tmp, 'bn-exported'))).outDir;
    const model = await loadModel(exported);
    const byName = new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
    const { weightNames } = readTfjsModel(userModel);
    expectSameBits(
      weightNames.map((n) => byName.get(n) as Float32Array),
      loadNetModel(resumed).values,
    );
    model.dispose();
  });

  it('serves as a teacher as model.save wrote it, its layers matched by name', async () => {
    const s = await summaryOf(
      job({
        model: { type: 'mlp', layers: [784, 16, 10] },
        train_micro_batch_size_per_gpu: 16,
        teachers: [{ model_dir: userModel }],
        distillation: {
          temperature: 2,
          // The student's first hidden layer against the teacher's layer named 'features' (16 units each).
          intermediate_matches: [{ layer_T: 'features', layer_S: 0, feature: 'hidden', loss: 'hidden_mse' }],
        },
      }),
      2,
    );
    expect(s.objective).toBe('distillation');
  });

  it('onnx: true writes model.onnx beside it; a layer without an ONNX form leaves the file out, not the job', async () => {
    const out = join(tmp, 'onnx-user');
    const s = await summaryOf(
      job({ train_micro_batch_size_per_gpu: 16, steps: 2, output_dir: out, onnx: true }),
      1,
    );
    expect(s.onnx_bytes).toBe(statSync(join(out, 'model.onnx')).size);
    // kd-launch trains a Reshape; the ONNX writer has no form for it.
    const reshaped = join(tmp, 'reshape');
    const m = tf.sequential({
      layers: [
        tf.layers.reshape({ inputShape: [28, 28, 1], targetShape: [784] }),
        tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
      ],
    });
    await saveModel(m, reshaped);
    m.dispose();
    const out2 = join(tmp, 'onnx-reshape');
    const s2 = await summaryOf(
      {
        ...job({ train_micro_batch_size_per_gpu: 16, steps: 2, output_dir: out2, onnx: true }),
        model: { path: reshaped },
      },
      1,
    );
    expect(s2.onnx_bytes).toBeUndefined();
    expect(existsSync(join(out2, 'model.json'))).toBe(true);
    expect(existsSync(join(out2, 'model.onnx'))).toBe(false);
  });

  it('is refused before any worker starts when kd-launch cannot run it or it does not fit the data', async () => {
    const noisy = join(tmp, 'user-noise');
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [784], units: 8 }),
        tf.layers.gaussianNoise({ stddev: 0.1, name: 'noise' }),
        tf.layers.dense({ units: 10 }),
      ],
    });
    await saveModel(model, noisy);
    model.dispose();
    expect(() =>
      launch(job({ model: { path: noisy }, train_micro_batch_size_per_gpu: 8 }), { nproc: 2 }),
    ).toThrow(/model\.path: .*user-noise: layer 'noise' \(GaussianNoise\) is not a layer kd-launch runs/);
    const five = join(tmp, 'user-five');
    const m5 = tf.sequential({ layers: [tf.layers.dense({ inputShape: [784], units: 5 })] });
    await saveModel(m5, five);
    m5.dispose();
    expect(() =>
      launch(job({ model: { path: five }, train_micro_batch_size_per_gpu: 8 }), { nproc: 2 }),
    ).toThrow(/model\.path: the model has 5 outputs but mnist has 10 classes/);
  });
});
