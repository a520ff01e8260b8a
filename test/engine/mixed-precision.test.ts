/**
 * Mixed precision in the engine, over two ranks in one process (real sockets): dynamic loss scaling agrees across
 * ranks, skips overflowing steps everywhere and follows DeepSpeed's sequence of scales; fp16 gradients below the
 * smallest subnormal vanish on the wire without scaling and survive with it.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { roundToWire } from '../../src/comm/wire-dtype.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import type { StepStats } from '../../src/engine/engine.ts';
import { LossScaler, type LossScalerOptions } from '../../src/engine/loss-scaler.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

const ADAM: OptimizerSpec = {
  type: 'Adam',
  params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0 },
};
const SCALER: LossScalerOptions = {
  initialScale: 2 ** 8,
  dynamic: true,
  window: 3,
  hysteresis: 2,
  consecutiveHysteresis: false,
  minScale: 1,
};

describe('fp16 with dynamic loss scaling at world 2', () => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(2);
  });
  afterAll(async () => {
    await world.close();
  });

  it('an inf gradient on one rank skips the step on every rank, keeps the weights, and the scales follow DeepSpeed', async () => {
    const batch = plan(3, 1, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, {
        optimizer: ADAM,
        halfPrecision: { dtype: 'fp16', scaler: new LossScaler(SCALER) },
      }),
    );
    // Rank 1's loss is poisoned (× inf) at steps 2 and 3; hysteresis 2 halves the scale at the second.
    const poisoned = new Set([2, 3]);
    const stats: StepStats[][] = [[], []];
    const weights: Float32Array[] = [];
    for (let s = 0; s < 10; s++) {
      weights.push(await engines[0].fullParams());
      const step = await Promise.all(
        engines.map((e, rank) =>
          e.step(
            microBatches(batch, rank, 2, s, { lossFactor: rank === 1 && poisoned.has(s) ? Infinity : 1 }),
          ),
        ),
      );
      step.forEach((st, r) => {
        stats[r].push(st);
      });
    }
    weights.push(await engines[0].fullParams());
    for (const s of [2, 3]) {
      expect(stats[0][s].skipped && stats[1][s].skipped, `step ${s}`).toBe(true);
      expect(weights[s + 1]).toEqual(weights[s]);
    }
    expect(stats[0].filter((st) => st.skipped).length).toBe(2);
    expect(weights[2]).not.toEqual(weights[1]);
    // The same overflow pattern through a scaler of its own: DeepSpeed's sequence (the scaler's unit test checks
    // it against values worked out from DeepSpeed's update_scale).
    const reference = new LossScaler(SCALER);
    const expected = Array.from({ length: 10 }, (_, s) => {
      const scale = reference.scale;
      reference.update(poisoned.has(s));
      return scale;
    });
    expect(stats[0].map((st) => st.lossScale)).toEqual(expected);
    expect(stats[1].map((st) => st.lossScale)).toEqual(expected);
    // Halved by the second overflow, then doubled once the window of clean steps has passed.
    expect(expected.slice(0, 5)).toEqual([256, 256, 256, 256, 128]);
    expect(Math.max(...expected.slice(5))).toBe(256);
    expect(stats[0][9].skippedSteps).toBe(2);
    for (const e of engines) e.dispose();
  });

  it('a snapshot carries the loss scaler: a restored engine continues the same scales', async () => {
    const batch = plan(3, 1, 2);
    const make = () =>
      world.groups.map((pg) =>
        tinyEngine(pg, batch, {
          optimizer: ADAM,
          halfPrecision: { dtype: 'fp16', scaler: new LossScaler(SCALER) },
        }),
      );
    const first = make();
    for (let s = 0; s < 3; s++) {
      const poison = s === 1 || s === 2;
      await Promise.all(
        first.map((e, rank) =>
          e.step(microBatches(batch, rank, 2, s, { lossFactor: poison && rank === 0 ? Infinity : 1 })),
        ),
      );
    }
    const snaps = first.map((e) => e.snapshot());
    const second = make();
    await Promise.all(second.map((e, r) => e.restore({ ...snaps[r], params: snaps[r].params.slice() })));
    const next = await Promise.all(
      [first, second].map((engines) =>
        Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, 3)))),
      ),
    );
    expect(next[1][0].lossScale).toBe(next[0][0].lossScale);
    expect(next[1][0].lossScale).toBe(128);
    expect(next[1][0].skippedSteps).toBe(2);
    for (const e of [...first, ...second]) e.dispose();
  });

  it('gradients below fp16’s smallest subnormal vanish without scaling (the loss stalls) and train with it', async () => {
    const batch = plan(6, 1, 2);
    const run = async (scaler: LossScaler | undefined) => {
      const engines = world.groups.map((pg) =>
        tinyEngine(pg, batch, { optimizer: ADAM, halfPrecision: { dtype: 'fp16', scaler } }),
      );
      const losses: number[] = [];
      const before = await engines[0].fullParams();
      for (let s = 0; s < 8; s++) {
        // The loss × 1e-9: every gradient is below 6e-8, fp16's smallest subnormal.
        const st = await Promise.all(
          engines.map((e, rank) => e.step(microBatches(batch, rank, 2, 0, { lossFactor: 1e-9 }))),
        );
        losses.push(st[0].loss / 1e-9);
      }
      const after = await engines[0].fullParams();
      for (const e of engines) e.dispose();
      return { losses, moved: after.some((v, i) => v !== before[i]) };
    };
    const unscaled = await run(undefined);
    expect(unscaled.moved).toBe(false);
    expect(new Set(unscaled.losses).size).toBe(1);
    const scaled = await run(new LossScaler({ ...SCALER, initialScale: 2 ** 16, window: 1000 }));
    expect(scaled.moved).toBe(true);
    expect(scaled.losses[7]).toBeLessThan(scaled.losses[0] * 0.98);
  });

  it.each([0, 1, 2, 3] as const)(
    'stage %i in fp16 keeps the forward’s weights in half precision between steps, the fp32 master only where it updates',
    async (stage) => {
      const batch = plan(3, 1, 2);
      const engines = world.groups.map((pg) =>
        tinyEngine(pg, batch, {
          optimizer: ADAM,
          zeroStage: stage,
          halfPrecision: { dtype: 'fp16', scaler: new LossScaler({ ...SCALER, window: 1000 }) },
        }),
      );
      for (let s = 0; s < 3; s++) {
        await Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, s))));
      }
      const seen = await Promise.all(engines.map((e) => e.fullParams()));
      expect(seen[1]).toEqual(seen[0]);
      // What the forward reads is fp16: rounding it to fp16 again changes nothing.
      expect(roundToWire('fp16', seen[0].slice())).toEqual(seen[0]);
      const e = engines[0];
      const m = e.memory();
      const n = e.shards.paddedLength;
      const shard = e.shards.shardLength;
      if (stage === 0) expect(m.params).toBe(n * 4 + n * 2);
      else if (stage < 3) expect(m.params).toBe(shard * 4 + n * 2);
      else expect(m.params).toBe(shard * 4);
      for (const x of engines) x.dispose();
    },
  );

  it('bf16 needs no scaler and trains like fp32 within bf16 rounding', async () => {
    const batch = plan(3, 2, 2);
    const train = async (dtype: 'bf16' | undefined) => {
      const engines = world.groups.map((pg) =>
        tinyEngine(pg, batch, { optimizer: ADAM, halfPrecision: dtype ? { dtype } : undefined }),
      );
      let last = 0;
      for (let s = 0; s < 5; s++) {
        const st = await Promise.all(engines.map((e, rank) => e.step(microBatches(batch, rank, 2, s))));
        last = st[0].loss;
      }
      for (const e of engines) e.dispose();
      return last;
    };
    const fp32 = await train(undefined);
    const bf16 = await train('bf16');
    expect(Math.abs(bf16 - fp32) / fp32).toBeLessThan(0.02);
  });
});
