import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  cwsmTemperature,
  flswTemperature,
  scheduledWeight,
  temperatureFor,
} from '../../src/objectives/distill/schedulers.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('temperature schedulers', () => {
  it('constant and none keep the base temperature', () => {
    const z = tf.tensor2d([[1, 2]]);
    expect(temperatureFor({ type: 'none' }, 4, z, z)).toBe(4);
    expect(temperatureFor({ type: 'constant' }, 3, z, z)).toBe(3);
  });

  it('flsw: τ_i = τ₀ + β·(mean w − w_i), w_i = (1 − cos(z_S,i, z_T,i))^γ', () => {
    const zS = tf.tensor2d([
      [1, 0],
      [1, 1],
      [0, 1],
    ]);
    const zT = tf.tensor2d([
      [0, 1],
      [2, 2],
      [1, 1],
    ]);
    // cos: 0, 1, 1/√2 → w = 1, 0, (1 − 1/√2)² with γ = 2
    const w = [1, 0, (1 - Math.SQRT1_2) ** 2];
    const mean = (w[0] + w[1] + w[2]) / 3;
    const tau = flswTemperature(zS, zT, 4, 2, 2).arraySync() as number[];
    w.forEach((wi, i) => {
      expect(tau[i]).toBeCloseTo(4 + 2 * (mean - wi), 5);
    });
    const viaSpec = temperatureFor({ type: 'flsw', beta: 2, gamma: 2 }, 4, zS, zT) as tf.Tensor;
    expect(viaSpec.arraySync()).toEqual(tau);
  });

  it('cwsm: τ_i = τ₀ + β·(mean w − w_i), w_i = 1/(max softmax(z_S,i) + 0.001)', () => {
    const zS = tf.tensor2d([
      [0, 0],
      [Math.log(3), 0],
    ]);
    // max softmax: 0.5 and 0.75
    const w = [1 / 0.501, 1 / 0.751];
    const mean = (w[0] + w[1]) / 2;
    const tau = cwsmTemperature(zS, 2, 0.5).arraySync() as number[];
    expect(tau[0]).toBeCloseTo(2 + 0.5 * (mean - w[0]), 5);
    expect(tau[1]).toBeCloseTo(2 + 0.5 * (mean - w[1]), 5);
  });

  it('passes no gradient back to the student logits', () => {
    const zT = tf.tensor2d([
      [0, 1, 2],
      [2, 1, 0],
    ]);
    const zS = tf.tensor2d([
      [1, 0, 3],
      [0.5, 2, 1],
    ]);
    for (const f of [
      (s: tf.Tensor) => flswTemperature(s, zT, 4, 1, 1),
      (s: tf.Tensor) => cwsmTemperature(s, 4, 1),
    ]) {
      const g = tf.grad((s: tf.Tensor) => tf.sum(tf.mul(f(s), tf.sum(s, -1))) as tf.Scalar)(zS);
      // d/ds Σ_i τ_i·Σ_c s_ic with τ held constant is τ_i for every c
      const tau = f(zS).arraySync() as number[];
      const grad = g.arraySync() as number[][];
      grad.forEach((row, i) => {
        for (const v of row) expect(v).toBeCloseTo(tau[i], 5);
      });
    }
  });
});

describe('weight schedulers', () => {
  it('none: the weight at every step', () => {
    expect([0, 50, 100].map((s) => scheduledWeight('none', 0.7, s, 100))).toEqual([0.7, 0.7, 0.7]);
  });

  it('linear_decay: w·(1 − step/total), held at 0 past the end', () => {
    expect(scheduledWeight('linear_decay', 2, 0, 100)).toBe(2);
    expect(scheduledWeight('linear_decay', 2, 25, 100)).toBeCloseTo(1.5, 12);
    expect(scheduledWeight('linear_decay', 2, 100, 100)).toBe(0);
    expect(scheduledWeight('linear_decay', 2, 150, 100)).toBe(0);
  });

  it('linear_growth: w·step/total, held at w past the end', () => {
    expect(scheduledWeight('linear_growth', 2, 0, 100)).toBe(0);
    expect(scheduledWeight('linear_growth', 2, 25, 100)).toBeCloseTo(0.5, 12);
    expect(scheduledWeight('linear_growth', 2, 100, 100)).toBe(2);
    expect(scheduledWeight('linear_growth', 2, 400, 100)).toBe(2);
  });

  it('needs the job length', () => {
    expect(() => scheduledWeight('linear_growth', 1, 0, 0)).toThrow(/total steps/);
  });
});
