/**
 * Every BLAS kernel against the stock cpu kernel it replaces, on the cpu backend and on the wasm backend: the
 * reference is computed with the stock kernels registered (uninstallBlasKernels), and each case also checks
 * that OpenBLAS really ran (a kernel that declined the call would hand it to the stock kernel and pass).
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, type MockInstance, vi } from 'vitest';
import { installBlasKernels, uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import type { BlasBinding } from '../../src/backend/blas/native.ts';
import { maxPoolGradKernel } from '../../src/backend/blas/pool.ts';
import {
  binding,
  expectClose,
  NO_BINDING,
  NO_BINDING_REASON,
  onBackend,
  randomArray,
  runKernel,
  sizeOf,
} from './helpers.ts';

const BACKENDS = ['cpu', 'wasm'];
let gemmCalls: MockInstance[] = [];
let poolRuns: MockInstance | undefined;

function nativeCalls(): number {
  return gemmCalls.reduce((sum, spy) => sum + spy.mock.calls.length, 0);
}

/** A tensor of seeded random values. */
function input(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(randomArray(sizeOf(shape), seed), shape);
}

interface Expectations {
  /** The stock kernels' computation of the same result, when it must be spelled differently. */
  stockCompute?: () => tf.Tensor;
  /** Counts calls that prove the kernel under test did the work; default: calls into OpenBLAS. */
  ran?: () => number;
  /** false: the case is one the kernels hand to the stock kernel, so `ran` must not move. */
  expectRan?: boolean;
}

/**
 * Stock cpu result (of `stockCompute`, by default the same computation), then the BLAS kernels' result on each
 * backend, compared; the kernel under test must have run (else a declined call would pass as the stock one).
 */
async function expectSameAsStock(
  compute: () => tf.Tensor,
  { stockCompute = compute, ran = nativeCalls, expectRan = true }: Expectations = {},
): Promise<void> {
  for (const name of BACKENDS) uninstallBlasKernels(name);
  const [stock] = await onBackend('cpu', stockCompute);
  for (const name of BACKENDS) {
    installBlasKernels(name);
    const before = ran();
    const [result] = await onBackend(name, compute);
    expectClose(result, stock);
    if (expectRan) expect(ran(), `the kernel under test ran on ${name}`).toBeGreaterThan(before);
    else expect(ran(), `the stock kernel ran on ${name}`).toBe(before);
  }
}

describe.skipIf(NO_BINDING)(
  `BLAS kernels equal the stock kernels (${NO_BINDING ? NO_BINDING_REASON : 'OpenBLAS'})`,
  () => {
    beforeAll(() => {
      const native = binding as BlasBinding;
      gemmCalls = [vi.spyOn(native, 'sgemm'), vi.spyOn(native, 'sgemmBatched')];
      poolRuns = vi.spyOn(maxPoolGradKernel, 'run');
    });
    afterAll(() => {
      for (const spy of gemmCalls) spy.mockRestore();
      poolRuns?.mockRestore();
      for (const name of BACKENDS) uninstallBlasKernels(name);
    });

    const transposes = [
      [false, false],
      [false, true],
      [true, false],
      [true, true],
    ] as const;
    // [batch dims of a, batch dims of b, m, k, n]
    const matmulShapes: [number[], number[], number, number, number][] = [
      [[], [], 1, 1, 1],
      [[], [], 3, 0, 4],
      [[2], [2], 0, 5, 3],
      [[], [], 37, 53, 29],
      [[], [], 128, 200, 65],
      [[3], [3], 7, 11, 5],
      [[2, 3], [1], 9, 4, 13],
      [[1], [4], 6, 17, 3],
      [[2, 1], [1, 3], 5, 8, 7],
      [[3], [2, 3], 4, 6, 5],
    ];
    for (const [batchA, batchB, m, k, n] of matmulShapes) {
      for (const [transposeA, transposeB] of transposes) {
        it(`BatchMatMul [${batchA}]×[${batchB}] m=${m} k=${k} n=${n} transposeA=${transposeA} transposeB=${transposeB}`, async () => {
          const aShape = [...batchA, ...(transposeA ? [k, m] : [m, k])];
          const bShape = [...batchB, ...(transposeB ? [n, k] : [k, n])];
          const attrs = { transposeA, transposeB };
          const compute = () => runKernel('BatchMatMul', { a: input(aShape, 1), b: input(bShape, 2) }, attrs);
          // The stock kernels broadcast only a batch of 1 (for [2,1]×[1,3] they make 3 products, not 6):
          // their reference gets both operands broadcast to the full batch first.
          const batch = tf.broadcast_util.assertAndGetBroadcastShape(batchA, batchB);
          const full = (shape: number[], seed: number) =>
            tf.broadcastTo(input(shape, seed), [...batch, ...shape.slice(-2)]);
          const stockCompute = () =>
            runKernel('BatchMatMul', { a: full(aShape, 1), b: full(bShape, 2) }, attrs);
          await expectSameAsStock(compute, { stockCompute });
        });
      }
    }

    const activations = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu'];
    for (const activation of activations) {
      for (const [transposeA, transposeB] of transposes) {
        it(`_FusedMatMul ${activation} with bias, transposeA=${transposeA} transposeB=${transposeB}`, async () => {
          const [m, k, n] = [19, 23, 17];
          await expectSameAsStock(() =>
            runKernel(
              '_FusedMatMul',
              {
                a: input([2, ...(transposeA ? [k, m] : [m, k])], 3),
                b: input([2, ...(transposeB ? [n, k] : [k, n])], 4),
                bias: input([n], 5),
              },
              { transposeA, transposeB, activation, leakyreluAlpha: 0.3 },
            ),
          );
        });
      }
    }

    it('_FusedMatMul without bias, and with a scalar bias', async () => {
      const attrs = { transposeA: false, transposeB: false, activation: 'relu' };
      await expectSameAsStock(() =>
        runKernel('_FusedMatMul', { a: input([1, 9, 8], 6), b: input([1, 8, 7], 7) }, attrs),
      );
      await expectSameAsStock(() =>
        runKernel(
          '_FusedMatMul',
          { a: input([1, 9, 8], 6), b: input([1, 8, 7], 7), bias: input([1], 8) },
          attrs,
        ),
      );
    });

    it('_FusedMatMul with prelu is handed to the stock kernel', async () => {
      await expectSameAsStock(
        () =>
          runKernel(
            '_FusedMatMul',
            { a: input([1, 9, 8], 6), b: input([1, 8, 7], 7), preluActivationWeights: input([7], 9) },
            { transposeA: false, transposeB: false, activation: 'prelu' },
          ),
        { expectRan: false },
      );
    });

    // [x shape, filter shape, strides, pad]
    const convCases: [number[], number[], number | [number, number], tf.NamedAttrMap['pad']][] = [
      [[2, 9, 7, 3], [3, 3, 3, 5], 1, 'same'],
      [[2, 9, 7, 3], [3, 3, 3, 5], 1, 'valid'],
      [[3, 11, 10, 4], [3, 2, 4, 6], 2, 'same'],
      [[1, 12, 13, 2], [5, 5, 2, 3], [2, 3], 'valid'],
      [[2, 8, 8, 5], [1, 1, 5, 7], 1, 'valid'],
      [[2, 10, 9, 3], [4, 3, 3, 4], [3, 2], 'same'],
      [[2, 7, 8, 3], [3, 3, 3, 2], 1, 2],
      // 320K patch elements per image: one image per im2col chunk, three chunks
      [[3, 40, 40, 8], [5, 5, 8, 4], 1, 'same'],
      [
        [2, 7, 8, 3],
        [3, 3, 3, 2],
        2,
        [
          [0, 0],
          [1, 2],
          [2, 0],
          [0, 0],
        ],
      ],
    ];
    for (const [xShape, filterShape, strides, pad] of convCases) {
      const label = `x=[${xShape}] filter=[${filterShape}] strides=${strides} pad=${JSON.stringify(pad)}`;
      const geometry = { strides, pad, dataFormat: 'NHWC', dilations: 1, dimRoundingMode: undefined };
      const outShape = () =>
        tf.backend_util.computeConv2DInfo(
          xShape as [number, number, number, number],
          filterShape as [number, number, number, number],
          strides,
          1,
          pad as 'same',
        ).outShape;

      it(`Conv2D ${label}`, async () => {
        await expectSameAsStock(() =>
          runKernel('Conv2D', { x: input(xShape, 1), filter: input(filterShape, 2) }, geometry),
        );
      });
      it(`FusedConv2D relu with bias ${label}`, async () => {
        await expectSameAsStock(() =>
          runKernel(
            'FusedConv2D',
            { x: input(xShape, 1), filter: input(filterShape, 2), bias: input([filterShape[3]], 3) },
            { ...geometry, activation: 'relu' },
          ),
        );
      });
      it(`Conv2DBackpropInput ${label}`, async () => {
        await expectSameAsStock(() =>
          runKernel(
            'Conv2DBackpropInput',
            { dy: input(outShape(), 4), filter: input(filterShape, 2) },
            { ...geometry, inputShape: xShape },
          ),
        );
      });
      it(`Conv2DBackpropFilter ${label}`, async () => {
        await expectSameAsStock(() =>
          runKernel(
            'Conv2DBackpropFilter',
            { x: input(xShape, 1), dy: input(outShape(), 4) },
            { ...geometry, filterShape },
          ),
        );
      });
    }

    // [input shape, filter size, strides, pad]; inputs rounded to tenths so that windows have ties
    const poolCases: [
      number[],
      number | [number, number],
      number | [number, number],
      tf.NamedAttrMap['pad'],
    ][] = [
      [[2, 8, 8, 3], 2, 2, 'valid'],
      [[2, 9, 7, 5], 3, 2, 'same'],
      [[1, 10, 11, 4], [2, 3], [1, 2], 'valid'],
      [[3, 6, 6, 2], 3, 1, 'same'],
    ];
    for (const [shape, filterSize, strides, pad] of poolCases) {
      it(`MaxPoolGrad input=[${shape}] filter=${filterSize} strides=${strides} pad=${pad}`, async () => {
        const attrs = { filterSize, strides, pad };
        await expectSameAsStock(
          () => {
            const x = tf.relu(tf.round(input(shape, 1).mul(10))).div(10);
            const output = tf.maxPool(x as tf.Tensor4D, filterSize, strides, pad as 'same');
            return runKernel('MaxPoolGrad', { dy: input(output.shape, 2), input: x, output }, attrs);
          },
          { ran: () => poolRuns?.mock.calls.length ?? 0 },
        );
      });
    }

    // A bias's gradient: the sum over the leading axes, without the stock wasm kernel's transpose.
    const sumCases: [number[], number[], boolean, boolean][] = [
      [[128, 1024], [0], false, true],
      [[2, 3, 5], [0, 1], true, true],
      [[0, 4], [0], false, true],
      [[2, 3, 5], [1, 0], false, false],
      [[4, 7], [1], false, false],
      [[3, 4], [0, 1], false, false],
      [[2, 3, 4], [0, 2], false, false],
    ];
    for (const [shape, axis, keepDims, ours] of sumCases) {
      it(`Sum of [${shape}] over [${axis}]${keepDims ? ' keeping dims' : ''}${ours ? '' : ': the stock kernel'}`, async () => {
        const sums = vi.spyOn(binding as BlasBinding, 'sumColumns');
        try {
          await expectSameAsStock(() => tf.sum(input(shape, 3), axis, keepDims), {
            ran: () => sums.mock.calls.length,
            expectRan: ours,
          });
          // The same bits as the stock wasm kernel, which sums each column in the same order (and leaves the sum
          // of nothing unwritten).
          if (sizeOf(shape) === 0) return;
          const summed = async () =>
            (await onBackend('wasm', () => tf.sum(input(shape, 3), axis, keepDims)))[0];
          uninstallBlasKernels('wasm');
          const stock = await summed();
          installBlasKernels('wasm');
          expect(Buffer.from((await summed()).buffer)).toEqual(Buffer.from(stock.buffer));
        } finally {
          sums.mockRestore();
        }
      });
    }

    it('an int32 matmul is handed to the stock kernel (cpu; the stock wasm kernel has none)', async () => {
      installBlasKernels('cpu');
      const before = nativeCalls();
      const [product] = await onBackend('cpu', () =>
        tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2], 'int32'), tf.tensor2d([5, 6, 7, 8], [2, 2], 'int32')),
      );
      expect([...product]).toEqual([19, 22, 43, 50]);
      expect(nativeCalls()).toBe(before);
    });

    it('a dilated convolution is handed to the stock kernel', async () => {
      const geometry = { strides: 1, pad: 'same', dataFormat: 'NHWC', dilations: 2 };
      await expectSameAsStock(
        () => runKernel('Conv2D', { x: input([1, 9, 9, 2], 1), filter: input([3, 3, 2, 3], 2) }, geometry),
        { expectRan: false },
      );
    });
  },
);
