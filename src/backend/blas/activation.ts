/**
 * The epilogue of the fused kernels (_FusedMatMul, FusedConv2D): bias, then activation, on the GEMM's output
 * in place. The bias goes in before the GEMM (C filled with it, then beta = 1) so it costs no extra pass.
 */
import type { TensorInfo } from '@tensorflow/tfjs';
import { sizeOf, Unsupported } from './kernel.ts';
import type { FloatView } from './storage.ts';

/**
 * The elementwise function of a fused activation (undefined for 'linear'), or Unsupported: 'prelu' (weights
 * broadcast against the output) is left to the stock kernel. Formulas as the stock cpu kernels have them.
 */
export function activationFunction(
  activation: string | undefined,
  leakyreluAlpha = 0.2,
): ((x: number) => number) | undefined | Unsupported {
  switch (activation ?? 'linear') {
    case 'linear':
      return undefined;
    case 'relu':
      return (x) => Math.max(x, 0);
    case 'relu6':
      return (x) => Math.min(Math.max(x, 0), 6);
    case 'leakyrelu':
      return (x) => (x < 0 ? leakyreluAlpha * x : x);
    case 'elu':
      return (x) => (x >= 0 ? x : Math.exp(x) - 1);
    case 'sigmoid':
      return (x) => 1 / (1 + Math.exp(-x));
    default:
      return new Unsupported(`fused activation '${activation}'`);
  }
}

export function applyInPlace(out: FloatView, size: number, fn: (x: number) => number): void {
  const { array, offset } = out;
  for (let i = offset; i < offset + size; i++) array[i] = fn(array[i]);
}

/**
 * Whether a bias can be added per output column (its size is the channel count n and only its last dimension
 * is not 1) or as a scalar. Anything else is a general broadcast, left to the stock kernel.
 */
export function checkBias(bias: TensorInfo | undefined, n: number): Unsupported | undefined {
  if (bias === undefined) return undefined;
  const size = sizeOf(bias.shape);
  const perColumn = size === n && bias.shape[bias.shape.length - 1] === n;
  return perColumn || size === 1 ? undefined : new Unsupported(`bias of shape [${bias.shape}]`);
}

/** Writes the bias (n values, or one repeated) into each of `rows` rows of n values, starting at out. */
export function fillRowsWithBias(
  out: FloatView,
  rows: number,
  n: number,
  bias: FloatView,
  biasSize: number,
): void {
  const { array, offset } = out;
  if (biasSize === 1) {
    array.fill(bias.array[bias.offset], offset, offset + rows * n);
    return;
  }
  const row = bias.array.subarray(bias.offset, bias.offset + n);
  for (let r = 0; r < rows; r++) array.set(row, offset + r * n);
}
