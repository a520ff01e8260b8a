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
    world = await makeWorld(1);
  });
  afterAll(async () => {
    vi.unstubAllEnvs();
    await world.close();
  });

  async function train(backend: string, zeroStage: 0 | 1 = 0): Promise<Float32Array> {
    await tf.setBackend(backend);
    const batch = plan(8, 1, 1);
    const engine = tinyEngine(world.groups[0], batch, {
      optimizer: ADAM,
      layers: [8, 32, 32, 3],
      zeroStage,
    });
    try {
      for (let s = 0; s < 8; s++) await engine.step(microBatches(batch, 0, 1, s));
      return await engine.fullParams();
    } finally {
      engine.dispose();
    }
  }

  // Stage 0 updates the parameters in the heap memory the tensors are views of; stage 1 gathers them into an fp32
  // master and copies them there (src/engine/zero.ts).
  it.each([0, 1] as const)(
    'trains the parameters the cpu backend trains (ZeRO %i, 8 Adam steps, 1e-4)',
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
