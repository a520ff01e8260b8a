/**
 * The engine on the wasm backend's own kernels (KD_BLAS=off, as on a machine without OpenBLAS): its XNNPACK matrix
 * multiply packs each weight tensor once and reuses the packed copy while the tensor lives, so parameters must
 * reach the forward as new tensors after each update (new tensors over the same heap memory: src/backend/resident.ts).
 * A run must train as the cpu backend trains.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import type { ZeroStage } from '../../src/engine/zero.ts';
import { makeWorld, type World } from '../comm/world.ts';
import { microBatches, plan, tinyEngine } from './tiny.ts';

const ADAM: OptimizerSpec = {
  type: 'Adam',
  params: { lr: 0.05, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0 },
};

describe('the engine on the stock wasm kernels', () => {
  let world: World;
  beforeAll(async () => {
    vi.stubEnv('KD_BLAS', 'off');
    uninstallBlasKernels('wasm');
    world = await makeWorld(2);
  });
  afterAll(async () => {
    vi.unstubAllEnvs();
    await world.close();
  });

  /** Two ranks in this process, their steps interleaved on one event loop (and, on wasm, one heap). */
  async function train(
    backend: string,
    zeroStage: ZeroStage,
    maxReuseDistance?: number,
  ): Promise<Float32Array> {
    await tf.setBackend(backend);
    const batch = plan(8, 1, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, { optimizer: ADAM, layers: [8, 32, 32, 3], zeroStage, maxReuseDistance }),
    );
    try {
      await Promise.all(
        engines.map(async (e, rank) => {
          for (let s = 0; s < 8; s++) await e.step(microBatches(batch, rank, 2, s));
        }),
      );
      // Collective at ZeRO-3: every rank gathers.
      return (await Promise.all(engines.map((e) => e.fullParams())))[0];
    } finally {
      for (const e of engines) e.dispose();
    }
  }

  // Stage 0 updates the parameters in the heap memory the tensors are views of; stages 1–2 all-gather them into it
  // while the other rank computes, and may grow the heap; stage 3 gathers each block into heap memory its tensors
  // are views of, for the micro-batch (the whole model) or block by block (src/engine/zero.ts, backend/resident.ts).
  it.each([
    ['ZeRO 0', 0, undefined],
    ['ZeRO 1', 1, undefined],
    ['ZeRO 2', 2, undefined],
    ['ZeRO 3', 3, undefined],
    ['ZeRO 3 block by block', 3, 0],
  ] as const)(
    'trains the parameters the cpu backend trains (world 2, %s, 8 Adam steps, 1e-4)',
    async (_name, stage, reuse) => {
      const cpu = await train('cpu', stage, reuse);
      await tf.setBackend('wasm');
      const buffers = tf.memory().numDataBuffers;
      const wasm = await train('wasm', stage, reuse);
      expect(tf.memory().numDataBuffers, 'every tensor over resident memory let go').toBe(buffers);
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < cpu.length; i++) {
        diff += (wasm[i] - cpu[i]) ** 2;
        norm += cpu[i] ** 2;
      }
      expect(Math.sqrt(diff / norm)).toBeLessThan(1e-4);
    },
  );
});
