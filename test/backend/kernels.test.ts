/**
 * kd-launch's own kernels for the wasm backend (src/backend/kernels/): Identity shares its input's memory instead
 * of copying it, and tensors stay correct and leak-free however clones and originals are disposed.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installKernels } from '../../src/backend/kernels/index.ts';

describe('wasm kernels', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    installKernels('wasm');
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  it('registers Identity once, in place of the stock kernel (a second install changes nothing)', () => {
    const ours = tf.getKernel('Identity', 'wasm');
    expect(installKernels('wasm')).toEqual([]);
    expect(tf.getKernel('Identity', 'wasm')).toBe(ours);
  });

  it('clones without copying: no new buffer, the values outlive the original, nothing leaks', () => {
    const before = tf.memory();
    const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const buffers = tf.memory().numDataBuffers;
    const b = tf.clone(a);
    // The stock kernel copies into a buffer of its own.
    expect(tf.memory().numDataBuffers).toBe(buffers);
    expect(b.shape).toEqual([2, 3]);
    a.dispose();
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    b.dispose();
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
  });

  it('gradients through saved tensors (which tfjs clones) equal the cpu backend’s', async () => {
    const grads = () =>
      tf.tidy(() => {
        const w = tf.tensor2d([0.5, -1, 2, 0.25, 3, -0.75], [3, 2]);
        const x = tf.tensor2d([1, 2, 3, -1, 0.5, 4], [2, 3]);
        const g = tf.grads((wv: tf.Tensor) => tf.sum(tf.relu(tf.matMul(x, wv as tf.Tensor2D))))([w]);
        return Array.from(g[0].dataSync());
      });
    const before = tf.memory().numTensors;
    const onWasm = grads();
    expect(tf.memory().numTensors).toBe(before);
    await tf.setBackend('cpu');
    const onCpu = grads();
    await tf.setBackend('wasm');
    expect(onWasm).toEqual(onCpu);
  });
});
