/**
 * ZeRO stages 1–3 against stage 0, in one process (the ranks' engines interleave on one event loop over real
 * ZeroMQ sockets); test/launcher/zero.test.ts repeats the key cases over real worker processes.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import type { Engine } from '../../src/engine/engine.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { ZeroShards } from '../../src/engine/zero-shards.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

const betas: [number, number] = [0.9, 0.999];
const OPTIMIZERS: OptimizerSpec[] = [
  { type: 'Adam', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0 } },
  { type: 'AdamW', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0.05 } },
  { type: 'Lamb', params: { lr: 0.01, betas, eps: 1e-8, weight_decay: 0.01 } },
];
const STEPS = 10;

/** ZeRO-3 both ways: the model gathered whole per micro-batch (DeepSpeed's default), and block by block. */
const STAGE3_WHOLE = Number.MAX_SAFE_INTEGER;
const STAGE3_BLOCKWISE = 0;

async function train(
  world: World,
  stage: ZeroStage,
  optimizer: OptimizerSpec,
  maxReuseDistance?: number,
): Promise<{ params: Float32Array; engines: Engine[] }> {
  const size = world.groups.length;
  const batch = plan(2, 2, size);
  const engines = world.groups.map((pg) =>
    tinyEngine(pg, batch, { optimizer, zeroStage: stage, gradientClipping: 0.5, maxReuseDistance }),
  );
  await Promise.all(
    engines.map(async (e, rank) => {
      for (let s = 0; s < STEPS; s++) await e.step(microBatches(batch, rank, size, s));
    }),
  );
  const all = await Promise.all(engines.map((e) => e.fullParams()));
  for (const p of all.slice(1)) expect(p).toEqual(all[0]);
  return { params: all[0], engines };
}

/**
 * Relative error per tensor, ‖a − b‖ / ‖b‖: element-wise relative error is meaningless for Adam, whose update of
 * an element with a near-zero gradient is ±lr whatever the gradient's rounding (1 ulp of reduction order flips it).
 */
function expectClose(actual: Float32Array, expected: Float32Array, engine: Engine, rel: number): void {
  expect(actual.length).toBe(expected.length);
  for (const slot of engine.slots) {
    let diff = 0;
    let norm = 0;
    for (let i = slot.offset; i < slot.offset + slot.size; i++) {
      diff += (actual[i] - expected[i]) ** 2;
      norm += expected[i] ** 2;
    }
    expect(Math.sqrt(diff) / Math.sqrt(norm), slot.name).toBeLessThanOrEqual(rel);
  }
}

describe('ZeroShards', () => {
  it('cuts the flat space into equal aligned shards, padding at the end', () => {
    const p = new ZeroShards(100, 3);
    expect(p.shardLength % 16).toBe(0);
    expect(p.paddedLength).toBe(3 * p.shardLength);
    expect(p.paddedLength).toBeGreaterThanOrEqual(100);
    expect([0, 1, 2].map((r) => p.ownedParams(r))).toEqual([
      { start: 0, end: 48 },
      { start: 48, end: 96 },
      { start: 96, end: 100 },
    ]);
    expect(p.padding(2)).toBe(44);
    expect(p.countsOf({ start: 40, end: 60 })).toEqual([8, 12, 0]);
    expect(p.piecesOf({ name: 'w', shape: [20], offset: 40, size: 20 })).toEqual([
      { rank: 0, range: { start: 40, end: 48 } },
      { rank: 1, range: { start: 48, end: 60 } },
    ]);
  });
});

describe.each([2, 3])('ZeRO at world %i', (size) => {
  let world: World;
  beforeAll(async () => {
    await tf.setBackend('cpu');
    world = await makeWorld(size);
  });
  afterAll(async () => {
    await world.close();
  });

  it.each(OPTIMIZERS.map((o) => [o.type, o] as const))(
    '%s: stages 1, 2 and 3 (gathered whole and block by block) train to stage 0’s parameters (clipping, accumulation 2)',
    async (_name, optimizer) => {
      const ref = await train(world, 0, optimizer);
      for (const [stage, reuse] of [
        [1, undefined],
        [2, undefined],
        [3, STAGE3_WHOLE],
        [3, STAGE3_BLOCKWISE],
      ] as const) {
        const run = await train(world, stage, optimizer, reuse);
        expectClose(run.params, ref.params, run.engines[0], 1e-5);
        for (const e of run.engines) e.dispose();
      }
      for (const e of ref.engines) e.dispose();
    },
  );

  it('each rank holds 1/N of the states it shards, plus at most one alignment pad', async () => {
    const optimizer = OPTIMIZERS[0];
    for (const [stage, reuse] of [
      [0, undefined],
      [1, undefined],
      [2, undefined],
      [3, STAGE3_WHOLE],
      [3, STAGE3_BLOCKWISE],
    ] as const) {
      const { engines } = await train(world, stage, optimizer, reuse);
      for (const e of engines) {
        const m = e.memory();
        const total = e.groups.length * 4;
        const share = e.shards.shardLength * 4;
        const pad = 16 * 4;
        expect(m.optimizer).toBeLessThanOrEqual(stage >= 1 ? 2 * (total / size + pad) : 2 * total);
        if (stage >= 1) expect(m.optimizer).toBeLessThanOrEqual((2 * total) / size + 2 * pad);
        if (stage >= 2) expect(m.grads).toBe(share);
        if (stage === 3) {
          expect(m.params).toBe(share);
          if (reuse === STAGE3_WHOLE) expect(m.gatheredPeak).toBe(total);
          else {
            expect(m.gatheredPeak).toBeGreaterThan(0);
            // The block computing and the next one, prefetched.
            expect(m.gatheredPeak).toBeLessThanOrEqual(e.groups.largestPair * 4);
          }
        } else {
          expect(m.gatheredPeak).toBe(0);
        }
        e.dispose();
      }
    }
  });
});
