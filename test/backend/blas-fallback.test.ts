/**
 * The path without OpenBLAS (KD_BLAS=off here; a machine without the binding takes the same path): the stock
 * kernels stay, the wasm backend gets the Conv2DBackpropFilter it lacks on the TypeScript GEMM, and both models
 * train. Needs no binding, so it runs everywhere.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { blasInfo, installBlasKernels, uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import { expectClose, onBackend, randomArray, runKernel } from './helpers.ts';
import { cnn, gradients, mlp, train } from './models.ts';

describe('without OpenBLAS (KD_BLAS=off)', () => {
  beforeAll(() => {
    vi.stubEnv('KD_BLAS', 'off');
  });
  afterAll(() => {
    uninstallBlasKernels('wasm');
    uninstallBlasKernels('cpu');
    vi.unstubAllEnvs();
  });

  it('keeps the stock kernels and supplies only the missing Conv2DBackpropFilter on wasm', () => {
    expect(installBlasKernels('wasm')).toEqual({
      active: false,
      kernels: ['Conv2DBackpropFilter'],
      reason: 'KD_BLAS=off',
    });
    expect(installBlasKernels('cpu')).toEqual({ active: false, kernels: [], reason: 'KD_BLAS=off' });
    const info = blasInfo();
    expect(info.available).toBe(false);
    expect(info.reason).toBe('KD_BLAS=off');
    expect(info.backends.wasm.kernels).toEqual(['Conv2DBackpropFilter']);
  });

  it('refuses backends it has no kernels for', () => {
    expect(installBlasKernels('webgl').reason).toMatch(/no BLAS kernels/);
  });

  it('the supplied Conv2DBackpropFilter equals the stock cpu kernel', async () => {
    for (const [strides, pad] of [
      [1, 'same'],
      [2, 'valid'],
    ] as const) {
      const attrs = { strides, pad, dataFormat: 'NHWC', filterShape: [3, 3, 4, 5] };
      const dyShape = tf.backend_util.computeConv2DInfo([2, 9, 8, 4], [3, 3, 4, 5], strides, 1, pad).outShape;
      const compute = () =>
        runKernel(
          'Conv2DBackpropFilter',
          {
            x: tf.tensor(randomArray(2 * 9 * 8 * 4, 1), [2, 9, 8, 4]),
            dy: tf.tensor(randomArray(tf.util.sizeFromShape(dyShape), 2), dyShape),
          },
          attrs,
        );
      const [stock] = await onBackend('cpu', compute);
      const [supplied] = await onBackend('wasm', compute);
      expectClose(supplied, stock);
    }
  });

  it('CNN gradients on wasm equal the stock cpu ones', async () => {
    const stock = await gradients(cnn, 'cpu');
    const wasm = await gradients(cnn, 'wasm');
    for (const [i, grad] of wasm.entries()) expectClose(grad, stock[i]);
  });

  for (const [label, model] of [
    ['MLP', mlp],
    ['CNN', cnn],
  ] as const) {
    it(`the ${label} trains on wasm`, async () => {
      await tf.setBackend('wasm');
      const { first, last } = train(model, 8);
      expect(last).toBeLessThan(first * 0.9);
    });
  }
});
