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
  async function train(backend: string, zeroStage: 0 | 1 | 2): Promise<Float32Array> {
    await tf.setBackend(backend);
    const batch = plan(8, 1, 2);
    const engines = world.groups.map((pg) =>
      tinyEngine(pg, batch, { optimizer: ADAM, layers: [8, 32, 32, 3], zeroStage }),
    );
    try {
      await Promise.all(
        engines.map(async (e, rank) => {
          for (let s = 0; s < 8; s++) await e.step(microBatches(batch, rank, 2, s));
        }),
      );
      return await engines[0].fullParams();
    } finally {
      for (const e of engines) e.dispose();
    }
  }

  // Stage 0 updates the parameters in the heap memory the tensors are views of; stages 1–2 all-gather them into it
  // while the other rank computes, and may grow the heap (src/engine/zero.ts, src/backend/resident.ts).
  it.each([0, 1, 2] as const)(
    'trains the parameters the cpu backend trains (world 2, ZeRO %i, 8 Adam steps, 1e-4)',
    async (stage) => {
      const cpu = await train('cpu', stage);
      const wasm = await train('wasm', stage);
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
