/**
 * Weight sharing on known values: 1-D k-means on a fixed set, zeros kept in a cluster of their own, each cluster's
 * gradient the mean of its weights' over the ranks' shards; and the engine at world 2, at every ZeRO stage, equal
 * to stage 0 with every clustered tensor holding at most k values after every step.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend/tf.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import { kMeans1d, WeightClusters } from '../../src/engine/clustering.ts';
import { prunableSlots } from '../../src/engine/pruning.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { mlpNet } from '../../src/models/mlp.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

describe('1-D k-means', () => {
  it('three groups found from evenly spaced centroids, each value to its nearest', () => {
    const values = Float32Array.from([0.1, 0.12, 0.11, 0.9, 0.92, -0.5, -0.52]);
    const c = kMeans1d(values, 3, 'linear', 10, true);
    expect(Array.from(c.indices)).toEqual([1, 1, 1, 2, 2, 0, 0]);
    expect(c.codebook[0]).toBeCloseTo(-0.51, 6);
    expect(c.codebook[1]).toBeCloseTo(0.11, 6);
    expect(c.codebook[2]).toBeCloseTo(0.91, 6);
    expect(c.zero).toBeUndefined();
    const plus = kMeans1d(values, 3, 'kmeans++', 10, true);
    expect(new Set(plus.indices).size).toBe(3);
  });

  it('exact zeros keep a cluster of their own at 0, whose gradient is 0; the others get their mean gradient', () => {
    const values = Float32Array.from([0, 0.5, 0, 0.7, -0.4, 0]);
    const c = kMeans1d(values, 3, 'linear', 5, true);
    expect(c.zero).toBe(2);
    expect([0, 2, 5].map((i) => c.indices[i])).toEqual([2, 2, 2]);
    expect(c.codebook[2]).toBe(0);
    // The same tensor as two ranks' shards, [0, 4) and [4, 6): their sums added give each cluster's mean.
    const slot = { name: 'w', shape: [2, 3], offset: 0, size: 6 };
    const clusters = new WeightClusters([slot], { clusters: 3, init: 'linear', iterations: 5 });
    const full = values.slice();
    clusters.cluster(full);
    expect(Array.from(full)).toEqual(Array.from(values, (_, i) => c.codebook[c.indices[i]]));
    const grads = Float32Array.from([9, 1, 9, 3, 5, 9]);
    const ranges = [
      { start: 0, end: 4 },
      { start: 4, end: 6 },
    ];
    const parts = ranges.map((r) => grads.slice(r.start, r.end));
    const sums = new Float32Array(18);
    parts.forEach((g, i) => {
      const partial = clusters.gradientSums(g, ranges[i]);
      for (let j = 0; j < sums.length; j++) sums[j] += partial[j];
    });
    for (const [i, g] of parts.entries()) clusters.shareGradients(g, ranges[i], sums);
    // 0.5 and 0.7 share a cluster (mean gradient 2), -0.4 is alone (5), the zeros get 0.
    expect([...parts[0], ...parts[1]]).toEqual([0, 2, 0, 2, 5, 0]);
  });
});

// SGD: a cluster's mean gradient can cancel to rounding noise, whose sum order differs between ZeRO stages, and
// Adam's first steps turn such noise into ±lr (as on the blank border of MNIST: see tfjs-model.test.ts).
const SGD: OptimizerSpec = {
  type: 'SGD',
  params: { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0 },
};
const STEPS = 6;
const K = 5;

describe('the engine shares weights', () => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(2);
  });
  afterAll(async () => {
    await world.close();
  });

  async function train(stage: ZeroStage, maxReuseDistance?: number) {
    const batch = plan(2, 2, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, {
        optimizer: SGD,
        zeroStage: stage,
        maxReuseDistance,
        clustering: { clusters: K, init: 'linear', iterations: 10 },
        layers: [8, 12, 9, 3],
      }),
    );
    const net = mlpNet({ type: 'mlp', layers: [8, 12, 9, 3], activation: 'tanh', dropout: 0 });
    const slots = prunableSlots(net, engines[0].groups);
    let params: Float32Array = new Float32Array(0);
    for (let s = 0; s < STEPS; s++) {
      await Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, s))));
      const full = await Promise.all(engines.map((e) => e.fullParams()));
      expect(full[1]).toEqual(full[0]);
      params = full[0];
      for (const slot of slots) {
        const distinct = new Set(params.subarray(slot.offset, slot.offset + slot.size)).size;
        expect(distinct, `${slot.name} after step ${s}`).toBeLessThanOrEqual(K);
      }
    }
    for (const e of engines) e.dispose();
    return params;
  }

  it('at every ZeRO stage to stage 0’s parameters, each tensor at most k values after every step', async () => {
    const ref = await train(0);
    for (const [stage, reuse] of [
      [1, undefined],
      [2, undefined],
      [3, Number.MAX_SAFE_INTEGER],
    ] as const) {
      const run = await train(stage, reuse);
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < ref.length; i++) {
        diff += (run[i] - ref[i]) ** 2;
        norm += ref[i] ** 2;
      }
      expect(Math.sqrt(diff / norm), `ZeRO ${stage}`).toBeLessThan(1e-5);
    }
  });
});
