/**
 * Quantization on known values: the integers and scales of symmetric weights (8 and 4 bits, per channel and per
 * tensor), round trips within half a step, the tensors of the forward equal to the arrays written to disk to the
 * bit, the straight-through gradient, the affine activation quantizer, and calibration by min/max and percentile.
 */
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/backend/select.ts';
import { tf } from '../../src/backend/tf.ts';
import { Rng } from '../../src/base/rng.ts';
import {
  ActivationQuantizers,
  affineOf,
  dequantizeWeights,
  fakeQuantAffine,
  fakeQuantWeights,
  qmaxOf,
  quantizeWeights,
  roundHalfEven,
} from '../../src/engine/quantization.ts';

await selectBackend('auto');

const weights = (n: number, seed: number) => {
  const rng = new Rng(seed);
  // Uniform in (−1, 1), a few of them ten times larger: weights with a tail.
  return Float32Array.from({ length: n }, (_, i) => (2 * rng.next() - 1) * (i % 17 === 0 ? 10 : 1));
};

describe('weight quantization', () => {
  it('rounds half to even, as tf.round and ONNX', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([
      0, 2, 2, -0, -2, -2, 2, -3,
    ]);
    expect([qmaxOf(8), qmaxOf(4)]).toEqual([127, 7]);
  });

  it('per channel: one scale per output channel (the last axis), ties to even', () => {
    // [[1, -2], [0.5, 4]]: channel 0 holds 1 and 0.5, channel 1 holds -2 and 4.
    const w = Float32Array.from([1, -2, 0.5, 4]);
    const { ints, scales } = quantizeWeights(w, [2, 2], { bits: 8, perChannel: true });
    expect(Array.from(scales)).toEqual([Math.fround(1 / 127), Math.fround(4 / 127)]);
    // 0.5 / (1/127) = 63.5 → 64; -2 / (4/127) = -63.5 → -64.
    expect(Array.from(ints)).toEqual([127, -64, 64, 127]);
  });

  it('4 bits per tensor: one scale, integers in −7…7', () => {
    const w = Float32Array.from([0.7, -0.35, 0.1, -0.7]);
    const { ints, scales } = quantizeWeights(w, [2, 2], { bits: 4, perChannel: false });
    expect(Array.from(scales)).toEqual([Math.fround(0.7 / 7)]);
    expect(Array.from(ints)).toEqual([7, -4, 1, -7]);
  });

  it('a round trip is within half a step of every weight; an all-zero channel stays zero', () => {
    const w = weights(64 * 10, 1);
    for (let i = 0; i < 64; i++) w[i * 10 + 3] = 0;
    for (const q of [
      { bits: 8, perChannel: true },
      { bits: 4, perChannel: false },
    ] as const) {
      const quantized = quantizeWeights(w, [64, 10], q);
      const back = dequantizeWeights(quantized);
      for (let i = 0; i < w.length; i++) {
        const s = quantized.scales[i % quantized.scales.length];
        expect(Math.abs(back[i] - w[i])).toBeLessThanOrEqual(s / 2 + 1e-7);
      }
      if (q.perChannel) expect(quantized.scales[3]).toBe(1);
    }
  });

  it("the forward's fake quantization equals the integers written to disk, to the bit", () => {
    const w = weights(3 * 3 * 4 * 8, 2);
    for (const q of [
      { bits: 8, perChannel: true },
      { bits: 8, perChannel: false },
      { bits: 4, perChannel: true },
      { bits: 4, perChannel: false },
    ] as const) {
      const expected = dequantizeWeights(quantizeWeights(w, [3, 3, 4, 8], q));
      const got = tf.tidy(() => fakeQuantWeights(tf.tensor(w, [3, 3, 4, 8]), q).dataSync());
      // + 0: a weight that rounds to zero is -0 in the forward, 0 as an integer.
      expect(Array.from(got, (v) => v + 0)).toEqual(Array.from(expected));
    }
  });

  it('the gradient passes straight through', () => {
    const w = tf.tensor(weights(12, 3), [3, 4]);
    const c = tf.tensor(weights(12, 4), [3, 4]);
    const g = tf.grad((x: tf.Tensor) =>
      tf.sum(tf.mul(fakeQuantWeights(x, { bits: 4, perChannel: true }), c)),
    )(w);
    expect(Array.from(g.dataSync())).toEqual(Array.from(c.dataSync()));
    tf.dispose([w, c, g]);
  });
});

describe('activation quantization', () => {
  it('8-bit affine over the range widened to hold 0: 0 is exact, the rest within half a step, outside clamped', () => {
    const q = affineOf(-1, 3);
    expect(q.scale).toBe(Math.fround(4 / 255));
    expect(q.zeroPoint).toBe(64); // round(63.75)
    expect(affineOf(0.5, 2).zeroPoint).toBe(0); // widened to [0, 2]
    const x = Float32Array.from([0, -1, 3, 0.123, -0.77, 2.9, 5, -4]);
    const got = tf.tidy(() => fakeQuantAffine(tf.tensor(x), q).dataSync());
    const reference = x.map((v) => {
      const u = Math.max(0, Math.min(255, roundHalfEven(Math.fround(v / q.scale)) + q.zeroPoint));
      return (u - q.zeroPoint) * q.scale;
    });
    expect(Array.from(got)).toEqual(Array.from(reference));
    expect(got[0]).toBe(0);
    for (let i = 1; i < 6; i++) expect(Math.abs(got[i] - x[i])).toBeLessThanOrEqual(q.scale / 2 + 1e-7);
    expect(got[6]).toBeCloseTo((255 - 64) * q.scale, 6);
    expect(got[7]).toBeCloseTo(-64 * q.scale, 6);
  });

  it('min/max calibration: the widest range over the batches; inputs pass unchanged until fixed', () => {
    const a = new ActivationQuantizers([true, false], { kind: 'minmax' });
    const x1 = tf.tensor([-1, 0.5, 2]);
    const x2 = tf.tensor([-0.5, 3]);
    a.observe(true);
    expect(a.input(0, x1)).toBe(x1);
    a.input(0, x2);
    a.input(1, x2);
    a.observe(false);
    expect(Array.from(a.ranges())).toEqual([-1, 3, 0, 0]);
    a.fix(a.ranges());
    expect(a.fixed?.[0]).toEqual(affineOf(-1, 3));
    expect(a.fixed?.[1]).toBeUndefined();
    const q = a.input(0, x1);
    expect(q).not.toBe(x1);
    tf.dispose([x1, x2, q]);
  });

  it('percentile calibration: the mean of each batch’s percentiles, outliers clipped', () => {
    const a = new ActivationQuantizers([true], { kind: 'percentile', percentile: 99 });
    // 0..99 with one outlier: the 99th percentile ignores it.
    const batch = Float32Array.from({ length: 100 }, (_, i) => i);
    batch[50] = 1e6;
    const x = tf.tensor(batch);
    a.observe(true);
    a.input(0, x);
    a.input(0, x);
    const [lo, hi] = a.ranges();
    expect(lo).toBe(0);
    expect(hi).toBe(99);
    x.dispose();
  });
});
