import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchPlan } from '../../src/config/batch.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import { globalNorm } from '../../src/engine/clip.ts';
import { Engine, type EngineOptions } from '../../src/engine/engine.ts';
import { constantLr } from '../../src/engine/lr-schedule.ts';
import { Rng } from '../../src/engine/rng.ts';
import { buildMlp } from '../../src/models/mlp.ts';
import { softmaxCrossEntropy } from '../../src/objectives/cross-entropy.ts';
import { makeWorld, type World } from '../comm/world.ts';

const IN = 8;
const CLASSES = 3;
const SAMPLES = 12;
const SGD: OptimizerSpec = {
  type: 'SGD',
  params: { lr: 0.1, momentum: 0, nesterov: false, weight_decay: 0 },
};

const rng = new Rng(99);
const X = Float32Array.from({ length: SAMPLES * IN }, () => rng.next() * 2 - 1);
const Y = Int32Array.from({ length: SAMPLES }, () => rng.nextInt(CLASSES));

function plan(microBatch: number, accumulation: number): BatchPlan {
  return { microBatch, accumulation, dataParallel: 1, trainBatchSize: microBatch * accumulation };
}

/** A tiny MLP and an engine over it; micro-batch i is samples [i·micro, (i+1)·micro). */
function setup(pg: World['groups'][number], batch: BatchPlan, extra: Partial<EngineOptions> = {}) {
  const model = buildMlp({ type: 'mlp', layers: [IN, 6, CLASSES], activation: 'tanh', dropout: 0 }, 5);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const engine = new Engine({ variables, optimizer: SGD, lrSchedule: constantLr(0.1), pg, batch, ...extra });
  const loss = (micro: number) => {
    const from = micro * batch.microBatch;
    const x = tf.tensor2d(X.subarray(from * IN, (from + batch.microBatch) * IN), [batch.microBatch, IN]);
    const y = tf.tensor1d(Y.subarray(from, from + batch.microBatch), 'int32');
    return softmaxCrossEntropy(model.apply(x) as tf.Tensor, y);
  };
  return { model, engine, loss };
}

describe('Engine at world 1', () => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(1);
  });
  afterAll(async () => {
    await world.close();
  });

  it('accumulating 3 micro-batches of 4 equals one step of 12', async () => {
    const pg = world.groups[0];
    const acc = setup(pg, plan(4, 3));
    const one = setup(pg, plan(12, 1));
    expect(acc.engine.flat.params).toEqual(one.engine.flat.params);
    for (let s = 0; s < 3; s++) {
      const a = await acc.engine.step(acc.loss);
      const b = await one.engine.step(one.loss);
      expect(a.loss).toBeCloseTo(b.loss, 5);
      expect(a.gradNorm).toBeGreaterThan(0);
    }
    const p = acc.engine.flat.params;
    const q = one.engine.flat.params;
    for (let i = 0; i < p.length; i++)
      expect(Math.abs(p[i] - q[i])).toBeLessThanOrEqual(1e-5 * Math.max(Math.abs(q[i]), 1e-2));
    // The variables hold what the flat buffer holds.
    const written = new Float32Array(await acc.model.getWeights()[0].data());
    expect(written).toEqual(p.subarray(0, IN * 6));
    acc.model.dispose();
    one.model.dispose();
  });

  it('clipping bounds the global norm of the applied gradient', async () => {
    const pg = world.groups[0];
    const maxNorm = 1e-3;
    const { model, engine, loss } = setup(pg, plan(12, 1), { gradientClipping: maxNorm });
    const before = engine.flat.params.slice();
    const stats = await engine.step(loss);
    expect(stats.gradNorm).toBeGreaterThan(maxNorm);
    expect(globalNorm(engine.flat.grads)).toBeLessThanOrEqual(maxNorm * (1 + 1e-5));
    // Plain SGD moves the parameters by lr × the clipped gradient.
    const moved = engine.flat.params.map((v, i) => v - before[i]);
    expect(globalNorm(moved)).toBeCloseTo(0.1 * maxNorm, 6);
    model.dispose();
  });

  it('keeps the tensor count flat across steps, and broadcast at world 1 keeps the parameters', async () => {
    const pg = world.groups[0];
    const { model, engine, loss } = setup(pg, plan(4, 3), {
      optimizer: { type: 'AdamW', params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 } },
    });
    const before = engine.flat.params.slice();
    await engine.broadcastParams(0);
    expect(engine.flat.params).toEqual(before);
    await engine.step(loss);
    const tensors = tf.memory().numTensors;
    for (let s = 0; s < 4; s++) await engine.step(loss);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(engine.globalStep).toBe(5);
    model.dispose();
  });

  it('refuses a batch plan for another world size', () => {
    const batch = { ...plan(4, 1), dataParallel: 2, trainBatchSize: 8 };
    expect(() => setup(world.groups[0], batch)).toThrow(
      /batch plan is for 2 data-parallel ranks, the group has 1/,
    );
  });
});
