/**
 * Magnitude pruning: the schedules on known values (tfmot's formulas), the mask's exact count with ties, and the
 * engine pruning under data parallelism at every ZeRO stage to stage 0's parameters, each pruned tensor at exactly
 * its sparsity and its pruned weights zero after every step, not only after the masks' steps.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import { PruningSpec } from '../../src/config/pruning.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import type { ParamGroups } from '../../src/engine/param-groups.ts';
import {
  kthSmallest,
  MagnitudePruner,
  prunableSlots,
  prunedCount,
  type SparsitySchedule,
  sparsityAt,
} from '../../src/engine/pruning.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { mlpNet } from '../../src/models/mlp.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

const polynomial: SparsitySchedule = {
  structure: 'weights',
  kind: 'polynomial',
  sparsity: 0.8,
  initialSparsity: 0,
  beginStep: 10,
  endStep: 50,
  frequency: 10,
  power: 3,
};

describe('sparsity schedules', () => {
  it("polynomial decay: tfmot's s_f + (s_i − s_f)(1 − t)^p on every frequency-th step of [begin, end]", () => {
    expect(sparsityAt(polynomial, 10)).toBe(0);
    expect(sparsityAt(polynomial, 20)).toBeCloseTo(0.8 - 0.8 * 0.75 ** 3, 12);
    expect(sparsityAt(polynomial, 30)).toBeCloseTo(0.8 - 0.8 * 0.5 ** 3, 12);
    expect(sparsityAt(polynomial, 50)).toBe(0.8);
    for (const step of [0, 9, 15, 49, 51, 60])
      expect(sparsityAt(polynomial, step), `step ${step}`).toBeUndefined();
  });

  it('reaches the final sparsity at end_step even where the frequency does not land on it', () => {
    const s = { ...polynomial, beginStep: 0, endStep: 25 };
    expect([0, 10, 20, 25].map((t) => sparsityAt(s, t) !== undefined)).toEqual([true, true, true, true]);
    expect(sparsityAt(s, 25)).toBe(0.8);
    expect(sparsityAt(s, 30)).toBeUndefined();
  });

  it('constant: the sparsity on every frequency-th step from begin_step, to the end of the run', () => {
    const s: SparsitySchedule = { ...polynomial, kind: 'constant', sparsity: 0.5, endStep: undefined };
    expect([10, 20, 1010].map((t) => sparsityAt(s, t))).toEqual([0.5, 0.5, 0.5]);
    expect(sparsityAt(s, 5)).toBeUndefined();
    expect(sparsityAt(s, 11)).toBeUndefined();
  });

  it('the job section refuses a sparsity outside [0, 1), a schedule that would unprune, and an empty range', () => {
    const issue = (input: unknown) => PruningSpec.safeParse(input).error?.issues[0]?.message;
    expect(issue({ sparsity: 1 })).toMatch(/a sparsity is a fraction in \[0, 1\): 1 would leave no weight/);
    expect(issue({ sparsity: -0.1 })).toMatch(/a sparsity is a fraction in \[0, 1\)/);
    expect(issue({ sparsity: 0.5, initial_sparsity: 0.6 })).toMatch(/pruning only removes weights/);
    expect(issue({ sparsity: 0.5, begin_step: 10, end_step: 10 })).toMatch(
      /end_step 10 is not after begin_step 10/,
    );
    expect(PruningSpec.parse({ sparsity: 0.9 })).toMatchObject({
      schedule: 'polynomial',
      frequency: 100,
      power: 3,
    });
  });
});

describe('MagnitudePruner', () => {
  const slot = (offset: number, size: number) => ({ name: `t${offset}`, shape: [size, 1], offset, size });

  it("prunes each tensor's smallest magnitudes, exactly round(n·s) of them with ties in index order", () => {
    // Tensor 0: 10 values with a tie at the threshold; tensor 1 (offset 16) its own threshold.
    const full = new Float32Array(20);
    full.set([0.5, -0.1, 0.3, 0.1, -0.9, 0.1, 0.7, -0.2, 0.1, 0.6], 0);
    full.set([4, -3, 2, -1], 16);
    const pruner = new MagnitudePruner([slot(0, 10), slot(16, 4)], { start: 0, end: 20 });
    pruner.update(full, 0.3);
    const p = full.slice();
    pruner.apply(p);
    // round(10 · 0.7) = 7 kept: the four 0.1s tie at the threshold; the first three in index order go.
    expect([...p.subarray(0, 10)]).toEqual([0.5, 0, 0.3, 0, -0.9, 0, 0.7, -0.2, 0.1, 0.6].map(Math.fround));
    // round(4 · 0.7) = 3 kept: only -1 goes. Elements outside the tensors are never touched.
    expect([...p.subarray(16)]).toEqual([4, -3, 2, 0]);
    expect(prunedCount(10, 0.3)).toBe(3);
    expect(prunedCount(4, 0.3)).toBe(1);
  });

  it('masks only the owned range, indexed from its start, with the same choice as a pruner that owns it all', () => {
    const full = Float32Array.from({ length: 12 }, (_, i) => ((i * 7) % 12) - 5.5);
    const whole = new MagnitudePruner([slot(0, 12)], { start: 0, end: 12 });
    const part = new MagnitudePruner([slot(0, 12)], { start: 4, end: 9 });
    whole.update(full, 0.5);
    part.update(full, 0.5);
    const a = full.slice();
    whole.apply(a);
    const b = full.slice(4, 9);
    part.apply(b);
    expect([...b]).toEqual([...a.subarray(4, 9)]);
    expect(a.filter((v) => v === 0)).toHaveLength(6);
  });

  it('selects the k-th smallest value as a sort would, with duplicates and every k', () => {
    const rng = new Rng(3);
    for (const n of [1, 2, 3, 10, 257]) {
      const a = Float32Array.from({ length: n }, () => rng.nextInt(7) / 4);
      const sorted = a.slice().sort();
      for (let k = 0; k < n; k++) expect(kthSmallest(a.slice(), k), `n ${n}, k ${k}`).toBe(sorted[k]);
    }
  });

  it('masks nothing before its first update', () => {
    const pruner = new MagnitudePruner([slot(0, 4)], { start: 0, end: 4 });
    const g = Float32Array.of(1, 2, 3, 4);
    pruner.apply(g);
    expect([...g]).toEqual([1, 2, 3, 4]);
  });
});

const ADAM: OptimizerSpec = {
  type: 'Adam',
  params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0 },
};
const STEPS = 9;
/** Masks after steps 1, 4 and 7 (and the end step, 8): 0.3 → 0.6 over [1, 8]. */
const SCHEDULE: SparsitySchedule = {
  structure: 'weights',
  kind: 'polynomial',
  sparsity: 0.6,
  initialSparsity: 0.3,
  beginStep: 1,
  endStep: 8,
  frequency: 3,
  power: 3,
};

describe('the engine prunes', () => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(2);
  });
  afterAll(async () => {
    await world.close();
  });

  const NET = mlpNet({ type: 'mlp', layers: [8, 12, 9, 3], activation: 'tanh', dropout: 0 });

  /** Trains STEPS steps at `stage` pruned by `schedule`; `check` sees the full parameters after each (equal on both ranks). */
  async function train(
    stage: ZeroStage,
    schedule: SparsitySchedule,
    maxReuseDistance?: number,
    check?: (full: Float32Array, step: number, groups: ParamGroups) => void,
  ) {
    const batch = plan(2, 2, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, {
        optimizer: ADAM,
        zeroStage: stage,
        gradientClipping: 0.5,
        maxReuseDistance,
        pruning: schedule,
        layers: [8, 12, 9, 3],
      }),
    );
    const { groups } = engines[0];
    let params: Float32Array = new Float32Array(0);
    for (let s = 0; s < STEPS; s++) {
      await Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, s))));
      const full = await Promise.all(engines.map((e) => e.fullParams()));
      expect(full[1]).toEqual(full[0]);
      params = full[0];
      check?.(params, s, groups);
    }
    for (const e of engines) e.dispose();
    return { params, groups };
  }

  /** Weights pruning: after each step, every pruned tensor holds exactly its pruned count of zeros. */
  function trainWeights(stage: ZeroStage, maxReuseDistance?: number) {
    let target = 0;
    return train(stage, SCHEDULE, maxReuseDistance, (full, s, groups) => {
      target = sparsityAt(SCHEDULE, s) ?? target;
      for (const slot of prunableSlots(NET, groups)) {
        const zeros = full.subarray(slot.offset, slot.offset + slot.size).filter((v) => v === 0).length;
        expect(zeros, `${slot.name} after step ${s}`).toBe(prunedCount(slot.size, target));
      }
    });
  }

  it('at every ZeRO stage to stage 0’s parameters, each tensor at exactly its sparsity after every step', async () => {
    const ref = await trainWeights(0);
    expect(prunableSlots(NET, ref.groups).map((s) => s.name)).toEqual([
      'dense0/kernel',
      'dense1/kernel',
      'dense2/kernel',
    ]);
    for (const [stage, reuse] of [
      [1, undefined],
      [2, undefined],
      [3, Number.MAX_SAFE_INTEGER],
      [3, 0],
    ] as const) {
      const run = await trainWeights(stage, reuse);
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < ref.params.length; i++) {
        diff += (run.params[i] - ref.params[i]) ** 2;
        norm += ref.params[i] ** 2;
      }
      expect(Math.sqrt(diff / norm), `stage ${stage}`).toBeLessThan(1e-5);
      // The same weights pruned: a zero where stage 0 has one.
      expect(run.params.map((v) => (v === 0 ? 1 : 0))).toEqual(ref.params.map((v) => (v === 0 ? 1 : 0)));
    }
  });

  it('units pruning at ZeRO 2 and 3 (masks sharded) prunes the units stage 0 prunes, to the same parameters', async () => {
    const units: SparsitySchedule = { ...SCHEDULE, structure: 'units' };
    const ref = await train(0, units);
    // Every hidden unit is all zero or all alive: its kernel column, its bias, the row it feeds.
    const [k0, b0, k1] = ref.groups.slots
      .slice(0, 3)
      .map((s) => ref.params.subarray(s.offset, s.offset + s.size));
    const dead = Array.from(b0, (_, u) => u).filter((u) => b0[u] === 0);
    expect(dead.length).toBe(prunedCount(12, sparsityAt(units, STEPS - 1) ?? 0.5));
    for (const u of dead) {
      for (let i = 0; i < 8; i++) expect(k0[i * 12 + u]).toBe(0);
      for (let j = 0; j < 9; j++) expect(k1[u * 9 + j]).toBe(0);
    }
    for (const [stage, reuse] of [
      [2, undefined],
      [3, 0],
    ] as const) {
      const run = await train(stage, units, reuse);
      expect(
        run.params.map((v) => (v === 0 ? 1 : 0)),
        `stage ${stage}`,
      ).toEqual(ref.params.map((v) => (v === 0 ? 1 : 0)));
      const diff = run.params.reduce((m, v, i) => Math.max(m, Math.abs(v - ref.params[i])), 0);
      expect(diff, `stage ${stage}`).toBeLessThan(1e-5);
    }
  });

  it('a run resumed from a checkpoint between two mask steps keeps its pruned weights at zero: the same bits', async () => {
    const batch = plan(2, 2, 2);
    const make = () =>
      world.groups.map((pg) =>
        tinyEngine(pg, batch, { optimizer: ADAM, pruning: SCHEDULE, layers: [8, 12, 9, 3] }),
      );
    const run = async (engines: ReturnType<typeof make>, from: number, to: number) => {
      for (let s = from; s < to; s++)
        await Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, s))));
    };
    const whole = make();
    await run(whole, 0, STEPS);
    // Stopped after step 4's masks, resumed at step 5: steps 5 and 6 update before the next masks (step 7).
    const first = make();
    await run(first, 0, 5);
    const snaps = first.map((e) => e.snapshot());
    const resumed = make();
    await Promise.all(resumed.map((e, r) => e.restore({ ...snaps[r], params: snaps[r].params.slice() })));
    await run(resumed, 5, STEPS);
    const [a, b] = await Promise.all([whole[0].fullParams(), resumed[0].fullParams()]);
    expect(
      Buffer.from(b.buffer, b.byteOffset, b.byteLength).equals(
        Buffer.from(a.buffer, a.byteOffset, a.byteLength),
      ),
    ).toBe(true);
    for (const e of [...whole, ...first, ...resumed]) e.dispose();
  });
});
