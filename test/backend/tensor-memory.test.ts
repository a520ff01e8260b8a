/**
 * Reading and writing a tensor's elements where its backend keeps them (src/backend/tensor-memory.ts): what the
 * engine's gradient read-out and parameter update stand on.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, describe, expect, it } from 'vitest';
import { overwriteTensor, tensorFloats } from '../../src/backend/tensor-memory.ts';

describe.each(['wasm', 'cpu'])('on the %s backend', (backend) => {
  afterAll(() => tf.disposeVariables());

  it('reads a tensor without a copy and overwrites it in place, for every op that uses it later', async () => {
    await tf.setBackend(backend);
    const w = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const before = tf.memory().numBytes;
    expect([...tensorFloats(w)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(overwriteTensor(w, Float32Array.from([6, 5, 4, 3, 2, 1]))).toBe(true);
    // Nothing allocated: the same memory holds the new values.
    expect(tf.memory().numBytes).toBe(before);
    expect([...w.dataSync()]).toEqual([6, 5, 4, 3, 2, 1]);
    const y = tf.matMul(tf.ones([1, 2]), w);
    expect([...y.dataSync()]).toEqual([9, 7, 5]);
    // A gradient, as the engine reads it: the values of the backend's output tensor.
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, x)))(w);
    expect([...tensorFloats(g)]).toEqual([12, 10, 8, 6, 4, 2]);
    tf.dispose([w, y, g]);
  });

  it('refuses values of another length, without writing', async () => {
    await tf.setBackend(backend);
    const w = tf.tensor1d([1, 2, 3]);
    expect(() => overwriteTensor(w, new Float32Array(2))).toThrow(/2 values for a tensor of 3/);
    expect([...w.dataSync()]).toEqual([1, 2, 3]);
    w.dispose();
  });
});

describe('on a backend whose memory kd-launch cannot reach', () => {
  it('reads a copy and reports that it cannot write', async () => {
    tf.registerBackend('opaque-test', () => tf.findBackendFactory('cpu')?.() as tf.KernelBackend);
    await tf.setBackend('opaque-test');
    const w = tf.tensor1d([1, 2, 3]);
    expect([...tensorFloats(w)]).toEqual([1, 2, 3]);
    expect(overwriteTensor(w, Float32Array.from([4, 5, 6]))).toBe(false);
    expect([...w.dataSync()]).toEqual([1, 2, 3]);
    w.dispose();
    await tf.setBackend('cpu');
    tf.removeBackend('opaque-test');
  });
});
