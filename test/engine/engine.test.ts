import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.ts';
import { nestingViolations, Timeline } from '../../src/trace/timeline.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { CLASSES, IN, microBatches, plan, SGD, tinyEngine } from './tiny.ts';

/** The reference L2 norm of a whole buffer, summed in float64. */
function globalNorm(buf: Float32Array): number {
  let s = 0;
  for (let i = 0; i < buf.length; i++) s += buf[i] * buf[i];
  return Math.sqrt(s);
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
    const acc = tinyEngine(pg, plan(4, 3));
    const one = tinyEngine(pg, plan(12, 1));
    expect(await acc.fullParams()).toEqual(await one.fullParams());
    for (let s = 0; s < 3; s++) {
      const a = await acc.step(microBatches(plan(4, 3), 0, 1));
      const b = await one.step(microBatches(plan(12, 1), 0, 1));
      expect(a.loss).toBeCloseTo(b.loss, 5);
      expect(a.gradNorm).toBeGreaterThan(0);
    }
    const p = await acc.fullParams();
    const q = await one.fullParams();
    for (let i = 0; i < p.length; i++)
      expect(Math.abs(p[i] - q[i])).toBeLessThanOrEqual(1e-5 * Math.max(Math.abs(q[i]), 1e-2));
    acc.dispose();
    one.dispose();
  });

  it('clipping bounds the global norm of the applied gradient', async () => {
    const pg = world.groups[0];
    const maxNorm = 1e-3;
    const engine = tinyEngine(pg, plan(12, 1), { gradientClipping: maxNorm });
    const before = await engine.fullParams();
    const stats = await engine.step(microBatches(plan(12, 1), 0, 1));
    expect(stats.gradNorm).toBeGreaterThan(maxNorm);
    // Plain SGD moves the parameters by lr × the clipped gradient.
    const moved = (await engine.fullParams()).map((v, i) => v - before[i]);
    expect(globalNorm(moved)).toBeCloseTo(0.1 * maxNorm, 6);
    engine.dispose();
  });

  it.each([
    [0, undefined],
    [1, undefined],
    [2, undefined],
    [3, Number.MAX_SAFE_INTEGER],
    [3, 0],
  ] as const)(
    'keeps the tensor count flat over 50 steps at ZeRO stage %i (reuse distance %s)',
    async (stage, reuse) => {
      const pg = world.groups[0];
      const engine = tinyEngine(pg, plan(4, 3), {
        optimizer: {
          type: 'AdamW',
          params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 },
        },
        zeroStage: stage,
        maxReuseDistance: reuse,
      });
      await engine.step(microBatches(plan(4, 3), 0, 1));
      const tensors = tf.memory().numTensors;
      for (let s = 0; s < 50; s++) await engine.step(microBatches(plan(4, 3), 0, 1, s));
      expect(tf.memory().numTensors).toBe(tensors);
      expect(engine.globalStep).toBe(51);
      engine.dispose();
    },
  );

  it('activation checkpointing gives the gradients of the one-pass backward', async () => {
    const pg = world.groups[0];
    const runs = await Promise.all(
      [undefined, 1, 2].map(async (every) => {
        const e = tinyEngine(pg, plan(6, 2), {
          activationCheckpointing: every ? { everyNLayers: every } : undefined,
          dropout: 0.3,
        });
        for (let s = 0; s < 3; s++) await e.step(microBatches(plan(6, 2), 0, 1, s));
        const p = await e.fullParams();
        e.dispose();
        return p;
      }),
    );
    for (const r of runs.slice(1)) {
      for (let i = 0; i < r.length; i++) expect(Math.abs(r[i] - runs[0][i])).toBeLessThanOrEqual(1e-6);
    }
  });

  it('activation checkpointing lowers the peak of tensor memory during a step', async () => {
    const pg = world.groups[0];
    const peak = async (every: number | undefined) => {
      const e = tinyEngine(pg, plan(48, 1), {
        activationCheckpointing: every ? { everyNLayers: every } : undefined,
        layers: [IN, 64, 64, 64, 64, 64, 64, CLASSES],
      });
      await e.step(microBatches(plan(48, 1), 0, 1));
      const info = await tf.profile(async () => {
        await e.step(microBatches(plan(48, 1), 0, 1));
      });
      e.dispose();
      return info.peakBytes;
    };
    const off = await peak(undefined);
    const on = await peak(1);
    expect(on).toBeLessThan(off * 0.8);
  });

  it('a pipeline stage’s backward with activation checkpointing: the same gradients, input gradient and loss, a lower peak', async () => {
    const pg = world.groups[0];
    const layers = [IN, 48, 48, 48, 48, CLASSES];
    // One micro-batch driven from outside, as a pipeline stage runs it: from the loss (the last stage) and from the
    // gradient of the stage's output (any other stage).
    const stage = async (every: number | undefined) => {
      const e = tinyEngine(pg, plan(24, 1), {
        activationCheckpointing: every ? { everyNLayers: every } : undefined,
        layers,
      });
      const mb = await microBatches(plan(24, 1), 0, 1)(0);
      e.beginStep();
      const fromLoss = await e.backwardMicroBatch(mb.x, mb.mode, mb, true);
      const dy = tf.ones([24, CLASSES]);
      let fromGrad: { dx?: tf.Tensor } = {};
      const info = await tf.profile(async () => {
        fromGrad = await e.backwardMicroBatch(mb.x, mb.mode, dy, true);
      });
      await e.endMicroBatch();
      await e.finishStep(fromLoss.loss ?? 0);
      const out = {
        loss: fromLoss.loss,
        dxLoss: fromLoss.dx?.dataSync().slice(),
        dxGrad: fromGrad.dx?.dataSync().slice(),
        params: await e.fullParams(),
        peak: info.peakBytes,
      };
      tf.dispose([dy, fromLoss.dx, fromGrad.dx] as tf.Tensor[]);
      mb.dispose();
      e.dispose();
      return out;
    };
    const whole = await stage(undefined);
    const segmented = await stage(1);
    expect(segmented.loss).toBe(whole.loss);
    for (const k of ['dxLoss', 'dxGrad', 'params'] as const) {
      const a = segmented[k] as Float32Array;
      const b = whole[k] as Float32Array;
      expect(a.length).toBe(b.length);
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(1e-6);
    }
    expect(segmented.peak).toBeLessThan(whole.peak);
  });

  it('records a step on the timeline: forward+backward per micro-batch, then reduction, optimizer, parameters', async () => {
    const timeline = new Timeline();
    const e = tinyEngine(world.groups[0], plan(4, 2), { timeline });
    await e.step(microBatches(plan(4, 2), 0, 1));
    e.dispose();
    const spans = timeline.spans();
    expect(spans.map((x) => x.cat)).toEqual([
      'backward',
      'backward',
      'allreduce',
      'allreduce',
      'optimizer',
      'allgather',
    ]);
    expect(spans.map((x) => x.micro)).toEqual([0, 1, undefined, undefined, undefined, undefined]);
    expect(nestingViolations(spans)).toEqual([]);
  });

  it('refuses a batch plan for another world size', () => {
    const batch = { ...plan(4, 1), dataParallel: 2, trainBatchSize: 8 };
    expect(() => tinyEngine(world.groups[0], batch)).toThrow(
      /batch plan is for 2 data-parallel ranks, the group has 1/,
    );
  });

  it('the tiny model has the sizes the tests assume', () => {
    const e: Engine = tinyEngine(world.groups[0], plan(4, 1), { optimizer: SGD });
    expect(e.slots.map((s) => s.shape)).toEqual([[IN, 7], [7], [7, 5], [5], [5, CLASSES], [CLASSES]]);
    e.dispose();
  });
});
