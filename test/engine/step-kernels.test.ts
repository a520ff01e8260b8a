/**
 * native/optim.c against its specification, the JS kernels of src/engine/step-kernels.ts: the same bits for every
 * kernel on awkward values, and the same parameters after 100 engine steps at every ZeRO stage.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import { jsStepKernels, loadOptimBinding, type StepKernels } from '../../src/engine/step-kernels.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

const load = loadOptimBinding();
const native = load.binding;
const LENGTHS = [0, 1, 7, 1001, 100_003];

/** Gradients with the values that trip kernels up: zeros, signed zeros, subnormals, huge and tiny values. */
function awkward(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const special = [0, -0, 1e-45, -1e-45, 3e38, -3e38, 1e-30];
  return Float32Array.from({ length: n }, (_, i) =>
    i % 11 === 3 ? special[i % special.length] : (rng.next() * 2 - 1) * 10 ** (rng.nextInt(9) - 4),
  );
}

const positive = (a: Float32Array) => a.map(Math.abs);
/** Bytes, compared with Buffer.equals: vitest's deep equality takes seconds on 100,000 elements. */
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/**
 * Runs `call` on copies of `arrays` with the JS kernels and with each instruction-set variant of the C ones; the
 * arrays and the result must match bit for bit.
 */
function same<R>(arrays: Float32Array[], call: (k: StepKernels, a: Float32Array[]) => R): void {
  const js = arrays.map((a) => a.slice());
  const expected = call(jsStepKernels, js);
  for (const [variant, kernels] of Object.entries(native?.variants ?? {})) {
    const c = arrays.map((a) => a.slice());
    expect(call(kernels, c), variant).toEqual(expected);
    for (const [i, a] of c.entries())
      expect(bits(a).equals(bits(js[i])), `${variant}: array ${i}`).toBe(true);
  }
}

it.each(LENGTHS)(
  'the JS Σg², %i elements, in partial sums, is the running sum within its rounding bound',
  (n) => {
    const g = awkward(n, 5);
    for (const [from, to] of [
      [0, n],
      [Math.floor(n / 3), n - Math.floor(n / 5)],
    ]) {
      let running = 0;
      for (let i = from; i < to; i++) running += g[i] * g[i];
      const [sum] = jsStepKernels.gradStats(g.slice(), 1, from, to, false);
      // Either order is off the exact sum by at most (terms − 1) roundings of a float64 add.
      expect(Math.abs(sum - running)).toBeLessThanOrEqual(running * (to - from) * 2 ** -52);
    }
  },
);

describe.skipIf(!native)(
  `native/optim.c equals the JS kernels bit for bit (${load.reason ?? load.path})`,
  () => {
    it.each(LENGTHS)('gradStats, %i elements: scaling, Σg² over a sub-range, inf and NaN', (n) => {
      const g = awkward(n, 1);
      const [from, to] = [Math.floor(n / 3), n - Math.floor(n / 5)];
      for (const scale of [1, 1 / 3, 2 ** -20]) same([g], (k, [a]) => k.gradStats(a, scale, from, to, true));
      if (n === 0) return;
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const h = g.slice();
        h[n - 1] = bad;
        same([h], (k, [a]) => k.gradStats(a, 0.5, 0, n, true));
        // Unchecked, the sum runs over whatever is there (here: not the bad element, outside the range).
        same([h], (k, [a]) => k.gradStats(a, 1, 0, n - 1, false));
      }
    });

    it.each(LENGTHS)(
      'sgd, %i elements: plain, momentum (first step and later), nesterov, decay, clipped',
      (n) => {
        const [p, g, buf] = [awkward(n, 2), awkward(n, 3), awkward(n, 4)];
        for (const [mu, nesterov, wd] of [
          [0, false, 0],
          [0.9, false, 0],
          [0.9, true, 0.01],
        ] as const) {
          for (const first of [true, false])
            for (const gs of [1, 0.37])
              same([p, g, buf], (k, [a, b, c]) =>
                k.sgd(a, b, mu > 0 ? c : undefined, 0.05, mu, wd, nesterov, first, gs),
              );
        }
      },
    );

    it.each(LENGTHS)('adam, %i elements: Adam and AdamW, clipped or not', (n) => {
      const [p, g, m, v] = [awkward(n, 5), awkward(n, 6), awkward(n, 7), positive(awkward(n, 8))];
      for (const [l2, decay] of [
        [0.01, 1],
        [0, 1 - 1e-3 * 0.05],
      ])
        for (const gs of [1, 0.25])
          same([p, g, m, v], (k, [a, b, c, d]) =>
            k.adam(
              a,
              b,
              c,
              d,
              0.9,
              0.999,
              1e-8,
              1e-3 / (1 - 0.9 ** 3),
              1 / Math.sqrt(1 - 0.999 ** 3),
              l2,
              decay,
              gs,
            ),
          );
    });

    it.each(LENGTHS)('lambMoments and lambApply, %i elements, over a sub-range', (n) => {
      const [p, g, m, v, u] = [
        awkward(n, 9),
        awkward(n, 10),
        awkward(n, 11),
        positive(awkward(n, 12)),
        awkward(n, 13),
      ];
      const [from, to] = [Math.floor(n / 4), n - Math.floor(n / 7)];
      for (const gs of [1, 0.5]) {
        same([p, g, m, v, u], (k, [a, b, c, d, e]) =>
          k.lambMoments(a, b, c, d, e, from, to, 0.9, 0.999, 1e-6, 0.01, gs),
        );
        same([p, u], (k, [a, e]) => k.lambApply(a, e, from, to, 1e-3 * 0.7));
      }
    });

    it.each(LENGTHS)('maskZero, %i elements, over a sub-range (NaN and -0 masked to +0)', (n) => {
      const rng = new Rng(14);
      const mask = Uint8Array.from({ length: n }, () => (rng.next() < 0.7 ? 0 : 1));
      const values = awkward(n, 15);
      if (n > 2) [values[0], values[1]] = [Number.NaN, -0];
      mask.fill(0, 0, Math.min(n, 2));
      same([values], (k, [a]) => k.maskZero(a, mask, 0, n));
      same([values], (k, [a]) => k.maskZero(a, mask, Math.floor(n / 3), n - Math.floor(n / 5)));
    });

    it('refuses arrays of other types or lengths and ranges outside the array, without writing', () => {
      const k = native as StepKernels;
      const p = new Float32Array(4);
      expect(() => k.adam(p, new Float32Array(3), p, p, 0.9, 0.999, 1e-8, 1, 1, 0, 1, 1)).toThrow(
        /differ in length/,
      );
      expect(() =>
        k.adam(p, new Float64Array(4) as unknown as Float32Array, p, p, 0.9, 0.999, 1e-8, 1, 1, 0, 1, 1),
      ).toThrow(/adam\(params/);
      expect(() => k.gradStats(p, 1, 2, 5, true)).toThrow(/range/);
      expect(() => k.lambApply(p, p, 3, 1, 1)).toThrow(/range/);
      expect(() => (k.sgd as unknown as (...a: unknown[]) => void)(p, p)).toThrow(/sgd\(params/);
      expect(() => k.maskZero(p, new Uint8Array(3), 0, 3)).toThrow(/differ in length/);
      expect(() => k.maskZero(p, new Uint8Array(4), 2, 5)).toThrow(/range/);
      expect(() => k.maskZero(p, new Float32Array(4) as unknown as Uint8Array, 0, 4)).toThrow(
        /maskZero\(values/,
      );
      expect(p).toEqual(new Float32Array(4));
    });
  },
);

const betas: [number, number] = [0.9, 0.999];
const OPTIMIZERS: OptimizerSpec[] = [
  { type: 'SGD', params: { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.01 } },
  { type: 'Adam', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0.01 } },
  { type: 'AdamW', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0.05 } },
  { type: 'Lamb', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0.01 } },
];
const STEPS = 100;

describe.skipIf(!native)('an engine on the native kernels trains as on the JS ones', () => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(2);
  });
  afterAll(async () => {
    delete process.env['KD_OPTIM'];
    await world.close();
  });

  /** The world's parameters after STEPS steps (clipping on, accumulation 2), with KD_OPTIM as given. */
  async function train(
    stage: ZeroStage,
    optimizer: OptimizerSpec,
    optim: 'on' | 'off',
  ): Promise<Float32Array> {
    process.env['KD_OPTIM'] = optim;
    const batch = plan(2, 2, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, { optimizer, zeroStage: stage, gradientClipping: 0.5 }),
    );
    try {
      await Promise.all(
        engines.map(async (e, rank) => {
          for (let s = 0; s < STEPS; s++) await e.step(microBatches(batch, rank, 2, s));
        }),
      );
      // Collective at stage 3: every rank gathers.
      return (await Promise.all(engines.map((e) => e.fullParams())))[0];
    } finally {
      for (const e of engines) e.dispose();
    }
  }

  // Every optimizer where shards are whole (0) and where they cut through tensors and gather per block (3); the
  // two whose state is per tensor (Adam) or reduced across shards (LAMB) at the stages between.
  it.each([
    [0, OPTIMIZERS],
    [1, OPTIMIZERS.filter((o) => o.type === 'Adam' || o.type === 'Lamb')],
    [2, OPTIMIZERS.filter((o) => o.type === 'Adam' || o.type === 'Lamb')],
    [3, OPTIMIZERS],
  ] as const)(`ZeRO stage %i: ${STEPS} steps end on the same bits`, async (stage, optimizers) => {
    for (const optimizer of optimizers) {
      const js = await train(stage, optimizer, 'off');
      const c = await train(stage, optimizer, 'on');
      expect(bits(c).equals(bits(js)), optimizer.type).toBe(true);
    }
  });
});
