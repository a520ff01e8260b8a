/**
 * Reading a tensor's elements where its backend keeps them (src/backend/tensor-memory.ts): what the engine's
 * gradient read-out stands on.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { describe, expect, it } from 'vitest';
import { tensorFloats } from '../../src/backend/tensor-memory.ts';

describe.each(['wasm', 'cpu'])('on the %s backend', (backend) => {
  it('reads a tensor and a gradient without a copy: a view of the memory the backend computes in', async () => {
    await tf.setBackend(backend);
    const w = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const before = tf.memory().numBytes;
    const view = tensorFloats(w);
    expect([...view]).toEqual([1, 2, 3, 4, 5, 6]);
    // Nothing allocated, and the same memory: on wasm the heap itself, on cpu the backend's array.
    expect(tf.memory().numBytes).toBe(before);
    expect(view.buffer).toBe(backend === 'wasm' ? tensorFloats(tf.scalar(0)).buffer : w.dataSync().buffer);
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, x)))(w);
    expect([...tensorFloats(g)]).toEqual([2, 4, 6, 8, 10, 12]);
    tf.dispose([w, g]);
  });
});

describe('on a backend whose memory kd-launch cannot reach', () => {
  it('reads through dataSync', async () => {
    tf.registerBackend('opaque-test', () => tf.findBackendFactory('cpu')?.() as tf.KernelBackend);
    await tf.setBackend('opaque-test');
    const w = tf.tensor1d([1, 2, 3]);
    expect([...tensorFloats(w)]).toEqual([1, 2, 3]);
    w.dispose();
    await tf.setBackend('cpu');
    tf.removeBackend('opaque-test');
  });
});
