/**
 * BatchNormalization in a user's tfjs model: kd-launch's training equals tfjs's own (`model.apply(x, {training:
 * true})` under an SGD step, moving statistics included), and at world 2 every rank normalises by the statistics
 * of the whole micro-batch (SyncBN), so two ranks on 8 samples each equal one on 16, at every ZeRO stage.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import type { Collectives } from '../../src/comm/types.ts';
import { Engine, type MicroBatch } from '../../src/engine/engine.ts';
import { constantLr } from '../../src/engine/lr-schedule.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { loadModel, saveModel } from '../../src/models/save.ts';
import { readTfjsModel } from '../../src/models/tfjs-dir.ts';
import { softmaxCrossEntropy } from '../../src/objectives/cross-entropy.ts';
import { NetTeacher } from '../../src/objectives/distill/teacher.ts';
import { makeWorld } from '../comm/world.ts';

const LR = 0.05;
const STEPS = 4;
const BATCH = 16;
const CLASSES = 3;

let dir: string;
/** Each model's directory and its weights after `STEPS` SGD steps of tfjs's own training, by weight name. */
const models = new Map<string, { path: string; trainedByTfjs: Map<string, Float32Array> }>();

const rng = new Rng(7);
const X = Float32Array.from({ length: STEPS * BATCH * 6 * 6 * 2 }, () => rng.next() * 4 - 1);
const Y = Int32Array.from({ length: STEPS * BATCH }, () => rng.nextInt(CLASSES));

function batchOf(step: number, from: number, count: number) {
  const at = step * BATCH + from;
  return {
    x: tf.tensor4d(X.slice(at * 72, (at + count) * 72), [count, 6, 6, 2]),
    y: tf.tensor1d(Y.slice(at, at + count), 'int32'),
  };
}

const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed }) });

function sequential(): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 3, kernelSize: 3, ...init(1) }),
      tf.layers.batchNormalization({ momentum: 0.8, name: 'bn_conv' }),
      tf.layers.activation({ activation: 'relu' }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 5, ...init(2) }),
      tf.layers.batchNormalization({ name: 'bn_dense' }),
      tf.layers.dense({ units: CLASSES, ...init(3) }),
    ],
  });
}

/** A residual block whose branch holds a BatchNormalization: its input travels packed beside the skip tensor. */
function residual(): tf.LayersModel {
  const input = tf.input({ shape: [6, 6, 2] });
  const stem = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', ...init(4) }).apply(input);
  const relu = tf.layers.activation({ activation: 'relu' }).apply(stem);
  const branch = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', ...init(5) }).apply(relu);
  const norm = tf.layers.batchNormalization({ name: 'bn_branch' }).apply(branch);
  const sum = tf.layers.add().apply([relu, norm] as tf.SymbolicTensor[]);
  const flat = tf.layers.flatten().apply(sum);
  const out = tf.layers.dense({ units: CLASSES, ...init(6) }).apply(flat);
  return tf.model({ inputs: input, outputs: out as tf.SymbolicTensor });
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'kd-batch-norm-'));
  for (const [name, build] of [
    ['sequential', sequential],
    ['residual', residual],
  ] as const) {
    const path = join(dir, name);
    const m = build();
    // Moving statistics away from their zeros and ones, so that a wrong update cannot pass by accident.
    for (const w of m.weights) {
      if (w.name.endsWith('moving_mean')) w.write(tf.fill(w.shape as number[], 0.3));
      if (w.name.endsWith('moving_variance')) w.write(tf.fill(w.shape as number[], 2));
    }
    await saveModel(m, path);
    const sgd = tf.train.sgd(LR);
    for (let step = 0; step < STEPS; step++) {
      const { x, y } = batchOf(step, 0, BATCH);
      sgd.minimize(() => softmaxCrossEntropy(m.apply(x, { training: true }) as tf.Tensor, y));
      tf.dispose([x, y]);
    }
    const trainedByTfjs = new Map(
      m.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]),
    );
    models.set(name, { path, trainedByTfjs });
    m.dispose();
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function pathOf(model: string): string {
  return (models.get(model) as { path: string }).path;
}

function trainedByTfjs(model: string): Map<string, Float32Array> {
  return (models.get(model) as { trainedByTfjs: Map<string, Float32Array> }).trainedByTfjs;
}

function engineOn(path: string, pg: Collectives, microBatch: number, zeroStage: ZeroStage): Engine {
  const { net } = readTfjsModel(path);
  return new Engine({
    net,
    seed: 0,
    optimizer: { type: 'SGD', params: { lr: LR, momentum: 0, nesterov: false, weight_decay: 0 } },
    lrSchedule: constantLr(LR),
    pg,
    batch: { microBatch, accumulation: 1, dataParallel: pg.size, trainBatchSize: microBatch * pg.size },
    zeroStage,
  });
}

/** Trains `model` at world `size` (micro-batch BATCH / size each) and returns the weights by manifest name. */
async function trainWorld(
  model: string,
  size: number,
  zeroStage: ZeroStage,
): Promise<Map<string, Float32Array>> {
  const path = pathOf(model);
  const world = await makeWorld(size);
  try {
    const engines = world.groups.map((pg) => engineOn(path, pg, BATCH / size, zeroStage));
    const per = BATCH / size;
    await Promise.all(
      engines.map(async (engine, rank) => {
        for (let step = 0; step < STEPS; step++) {
          await engine.step(async (): Promise<MicroBatch> => {
            const { x, y } = batchOf(step, rank * per, per);
            return {
              x,
              mode: { training: true, seed: 1 },
              taps: [],
              loss: (out) => softmaxCrossEntropy(out.logits, y),
              dispose: () => tf.dispose([x, y]),
            };
          });
        }
      }),
    );
    const all = await Promise.all(engines.map((e) => e.fullParams()));
    for (const e of engines) e.dispose();
    const { weightNames } = readTfjsModel(path);
    const slots = engines[0].slots;
    return new Map(
      weightNames.map((name, k) => [name, all[0].slice(slots[k].offset, slots[k].offset + slots[k].size)]),
    );
  } finally {
    await world.close();
  }
}

function expectClose(ours: Map<string, Float32Array>, reference: Map<string, Float32Array>, tol: number) {
  expect([...ours.keys()].sort()).toEqual([...reference.keys()].sort());
  for (const [name, want] of reference) {
    const got = ours.get(name) as Float32Array;
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < want.length; i++) {
      diff = Math.max(diff, Math.abs(got[i] - want[i]));
      norm = Math.max(norm, Math.abs(want[i]));
    }
    // A bias feeding a BatchNormalization has no gradient in exact arithmetic (the batch mean removes it): it
    // holds rounding noise near 0 in both, so its error is measured against a floor.
    expect(diff / Math.max(norm, 1e-2), name).toBeLessThan(tol);
  }
}

describe('BatchNormalization', () => {
  it('trains as tfjs trains it: weights and moving statistics after 4 SGD steps (1e-5)', async () => {
    const ours = await trainWorld('sequential', 1, 0);
    expectClose(ours, trainedByTfjs('sequential'), 1e-5);
    // The moving statistics moved (from 0.3 and 2).
    for (const name of ['bn_conv/moving_mean', 'bn_dense/moving_variance']) {
      const start = name.endsWith('mean') ? 0.3 : 2;
      expect(Math.abs((ours.get(name) as Float32Array)[0] - start), name).toBeGreaterThan(1e-3);
    }
  });

  for (const stage of [0, 1, 2, 3] as const) {
    it(`ZeRO ${stage}: two ranks on 8 samples each equal one on 16 (SyncBN, 1e-5)`, async () => {
      expectClose(await trainWorld('sequential', 2, stage), trainedByTfjs('sequential'), 1e-5);
    });
  }

  it('in a residual branch (its input packed beside the skip tensor): world 1 as tfjs, world 2 at ZeRO 0 and 3 the same', async () => {
    const reference = trainedByTfjs('residual');
    expectClose(await trainWorld('residual', 1, 0), reference, 1e-5);
    for (const stage of [0, 3] as const) expectClose(await trainWorld('residual', 2, stage), reference, 1e-5);
  });

  it('as a teacher, gives the logits tf.loadLayersModel gives (moving statistics, no batch statistics)', async () => {
    const { net, values } = loadNetModel(pathOf('sequential'));
    const teacher = new NetTeacher(net, values);
    const loaded = await loadModel(pathOf('sequential'));
    const { x } = batchOf(0, 0, 4);
    const ours = teacher.run(x).logits.dataSync();
    const theirs = (loaded.predict(x) as tf.Tensor).dataSync();
    expect(ours.length).toBe(theirs.length);
    for (let i = 0; i < theirs.length; i++) expect(Math.abs(ours[i] - theirs[i])).toBeLessThan(1e-5);
    teacher.dispose();
    loaded.dispose();
  });
});
