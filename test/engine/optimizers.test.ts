import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import { createOptimizer } from '../../src/engine/create-optimizer.ts';
import { type FlatRange, layoutSlots, type TensorSlot } from '../../src/engine/flat-params.ts';
import { fullLayout, type PartialSumReducer } from '../../src/engine/optimizer.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { type RefTensor, refAdam, refLamb, refSgd } from './reference.ts';

/** Three tensors of 7, 13 and 5 elements: flat length 25. */
const SLOTS: TensorSlot[] = layoutSlots([
  { name: 'a', shape: [7] },
  { name: 'b', shape: [13] },
  { name: 'c', shape: [5] },
]);
const N = 25;
const STEPS = 4;
const LR = 0.01;

function uniform(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * rng.next() - 1) * scale);
}

const rng = new Rng(1234);
const INIT = uniform(rng, N, 1);
INIT.fill(0, 20, 25); // tensor c starts at zero: LAMB's trust ratio must fall back to 1
const GRADS = Array.from({ length: STEPS }, () => uniform(rng, N, 0.5));

const perTensor = (flat: Float32Array): number[][] =>
  SLOTS.map((s) => Array.from(flat.subarray(s.offset, s.offset + s.size)));
const refSteps: RefTensor[][] = GRADS.map((g) => perTensor(g).map((gt) => ({ p: [], g: gt })));

/** Runs `spec` over the shards (one optimizer each, stepped together) and returns the full parameters. */
async function runSharded(
  spec: OptimizerSpec,
  cuts: number[],
  reducers?: PartialSumReducer[],
): Promise<Float32Array> {
  const bounds = [0, ...cuts, N];
  const ranges: FlatRange[] = bounds.slice(1).map((end, i) => ({ start: bounds[i], end }));
  const params = INIT.slice();
  const opts = ranges.map((range, i) => createOptimizer(spec, { slots: SLOTS, range }, reducers?.[i]));
  for (const g of GRADS) {
    await Promise.all(
      ranges.map((r, i) => opts[i].step(params.subarray(r.start, r.end), g.slice(r.start, r.end), LR)),
    );
  }
  return params;
}

function expectClose(actual: Float32Array, expected: ArrayLike<number>, rtol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const tol = rtol * Math.max(Math.abs(expected[i]), 1e-3);
    expect(
      Math.abs(actual[i] - expected[i]),
      `element ${i}: ${actual[i]} vs ${expected[i]}`,
    ).toBeLessThanOrEqual(tol);
  }
}

const sgd = (momentum: number, nesterov: boolean, wd: number): OptimizerSpec => ({
  type: 'SGD',
  params: { lr: LR, momentum, nesterov, weight_decay: wd },
});
const adam = (type: 'Adam' | 'AdamW' | 'Lamb', wd: number): OptimizerSpec => ({
  type,
  params: { lr: LR, betas: [0.9, 0.999], eps: 1e-8, weight_decay: wd },
});

describe('optimizers against per-element references', () => {
  const init = perTensor(INIT);

  it('SGD: plain, momentum, nesterov, weight decay', async () => {
    for (const [momentum, nesterov, wd] of [
      [0, false, 0],
      [0.9, false, 0.01],
      [0.9, true, 0.01],
    ] as const) {
      const got = await runSharded(sgd(momentum, nesterov, wd), []);
      expectClose(got, refSgd(refSteps, init, { lr: LR, momentum, nesterov, wd }).flat(), 1e-5);
    }
  });

  it('Adam (L2 through the gradient) and AdamW (decoupled decay)', async () => {
    for (const decoupled of [false, true]) {
      const got = await runSharded(adam(decoupled ? 'AdamW' : 'Adam', 0.1), []);
      const want = refAdam(refSteps, init, { lr: LR, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1, decoupled });
      expectClose(got, want.flat(), 1e-5);
    }
    // Decoupled decay differs from L2: the two must not coincide.
    expect(await runSharded(adam('Adam', 0.1), [])).not.toEqual(await runSharded(adam('AdamW', 0.1), []));
  });

  it("a schedule's betas (OneCycle) replace the configured ones for that step", async () => {
    for (const type of ['AdamW', 'Lamb'] as const) {
      const withBetas = async (configured: [number, number], scheduled?: [number, number]) => {
        const spec = adam(type, 0.1);
        if (spec.type === 'SGD') throw new Error('unreachable');
        const opt = createOptimizer(
          { ...spec, params: { ...spec.params, betas: configured } },
          fullLayout(SLOTS),
        );
        const params = INIT.slice();
        for (const g of GRADS) await opt.step(params, g, LR, scheduled);
        return params;
      };
      expect(await withBetas([0.9, 0.999], [0.8, 0.99])).toEqual(await withBetas([0.8, 0.99]));
      expect(await withBetas([0.9, 0.999], [0.8, 0.99])).not.toEqual(await withBetas([0.9, 0.999]));
    }
  });

  it('LAMB as DeepSpeed FusedLamb, trust ratio 1 for an all-zero tensor', async () => {
    const got = await runSharded(adam('Lamb', 0.01), []);
    const want = refLamb(refSteps, init, {
      lr: LR,
      b1: 0.9,
      b2: 0.999,
      eps: 1e-8,
      wd: 0.01,
      maxCoeff: 10,
      minCoeff: 0.01,
    });
    expectClose(got, want.flat(), 1e-5);
  });

  it('rejects buffers that are not the shard', async () => {
    const opt = createOptimizer(sgd(0, false, 0), fullLayout(SLOTS));
    await expect(opt.step(new Float32Array(3), new Float32Array(3), LR)).rejects.toThrow(/shard \[0, 25\)/);
  });
});

describe('optimizers on shards equal the full-buffer run', () => {
  let world2: World;
  let world3: World;
  beforeAll(async () => {
    world2 = await makeWorld(2);
    world3 = await makeWorld(3);
  });
  afterAll(async () => {
    await world2.close();
    await world3.close();
  });

  it('SGD, Adam, AdamW: cut through a tensor', async () => {
    for (const spec of [sgd(0.9, true, 0.01), adam('Adam', 0.1), adam('AdamW', 0.1)]) {
      expectClose(await runSharded(spec, [10]), await runSharded(spec, []), 1e-6);
    }
  });

  it('LAMB: per-tensor norms summed across shards by all-reduce', async () => {
    const spec = adam('Lamb', 0.01);
    const full = await runSharded(spec, []);
    expectClose(await runSharded(spec, [10], world2.groups), full, 1e-6);
    // The middle shard holds part of one tensor only; the others straddle two.
    expectClose(await runSharded(spec, [10, 12], world3.groups), full, 1e-6);
    // Partial norms alone would be wrong: a shard that cuts a tensor must be given a reducer.
    await expect(runSharded(spec, [10])).rejects.toThrow(/holds part of b; its norm needs a reducer/);
  });
});
