/**
 * The training path end to end: gradients of a small MLP and a small CNN with the BLAS kernels equal the stock
 * cpu kernels' (on the cpu backend, and on the wasm backend, whose stock kernels cannot train a CNN at all).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { installBlasKernels, uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import { expectClose, NO_BINDING, NO_BINDING_REASON } from './helpers.ts';
import { cnn, gradients, mlp, type TinyModel } from './models.ts';

const MODELS: [string, TinyModel][] = [
  ['MLP (dense, relu, dropout, fused dense, softmax cross-entropy)', mlp],
  ['CNN (conv2d, relu, maxPool, strided conv2d, dense)', cnn],
];

describe.skipIf(NO_BINDING)(
  `training with the BLAS kernels (${NO_BINDING ? NO_BINDING_REASON : 'OpenBLAS'})`,
  () => {
    afterAll(() => {
      uninstallBlasKernels('cpu');
      uninstallBlasKernels('wasm');
    });

    for (const [label, model] of MODELS) {
      it(`${label}: the same gradients as the stock cpu kernels`, async () => {
        uninstallBlasKernels('cpu');
        const stock = await gradients(model, 'cpu');
        expect(installBlasKernels('cpu').active).toBe(true);
        expect(installBlasKernels('wasm').active).toBe(true);
        for (const backend of ['cpu', 'wasm']) {
          const blas = await gradients(model, backend);
          expect(blas.length).toBe(stock.length);
          for (const [i, grad] of blas.entries()) expectClose(grad, stock[i]);
        }
      });
    }
  },
);
