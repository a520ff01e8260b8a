/**
 * MaxPoolGrad: not a GEMM, but once the GEMMs are fast it is the slowest kernel of a CNN training step on the
 * wasm backend (about 30% of the step for a 2-conv MNIST CNN, against a few percent here). The gradient of
 * each pooling window goes to its maximum, the first one in row-major order on ties, as the stock kernels do.
 */
import type { MaxPoolGradAttrs } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { type BlasKernel, required, requireFloat32, sizeOf } from './kernel.ts';

export const maxPoolGradKernel: BlasKernel = {
  name: 'MaxPoolGrad',
  run({ inputs, attrs, storage }) {
    const { dy, input } = required(inputs, 'dy', 'input');
    const unsupported = requireFloat32(dy, input);
    if (unsupported !== undefined) return unsupported;
    const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as MaxPoolGradAttrs;
    const info = tf.backend_util.computePool2DInfo(
      input.shape as [number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const dx = storage.allocate(input.shape);
    const xView = storage.view(input);
    const dyView = storage.view(dy);
    const dxView = storage.view(dx);
    const x = xView.array;
    const dyValues = dyView.array;
    const dxValues = dxView.array;
    const xOffset = xView.offset;
    const dxOffset = dxView.offset;
    dxValues.fill(0, dxOffset, dxOffset + sizeOf(input.shape));

    const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info;
    const { strideHeight, strideWidth, filterHeight, filterWidth, padInfo } = info;
    // Per channel: the window's largest value so far and where it is. Walking the window row by row with
    // the channels innermost reads the input contiguously (NHWC).
    const best = new Float32Array(channels);
    const bestAt = new Int32Array(channels);
    let dyIndex = dyView.offset;
    for (let b = 0; b < batchSize; b++) {
      for (let oy = 0; oy < outHeight; oy++) {
        const y0 = oy * strideHeight - padInfo.top;
        const yMin = Math.max(0, y0);
        const yMax = Math.min(inHeight, y0 + filterHeight);
        for (let ox = 0; ox < outWidth; ox++) {
          const x0 = ox * strideWidth - padInfo.left;
          const xMin = Math.max(0, x0);
          const xMax = Math.min(inWidth, x0 + filterWidth);
          for (let c = 0; c < channels; c++) {
            best[c] = Number.NEGATIVE_INFINITY;
            bestAt[c] = -1;
          }
          for (let y = yMin; y < yMax; y++) {
            for (let xi = xMin; xi < xMax; xi++) {
              const at = ((b * inHeight + y) * inWidth + xi) * channels;
              for (let c = 0; c < channels; c++) {
                const value = x[xOffset + at + c];
                if (value > best[c]) {
                  best[c] = value;
                  bestAt[c] = at + c;
                }
              }
            }
          }
          // A window of NaN or -Infinity only has no maximum, and passes no gradient (as in the stock kernels).
          for (let c = 0; c < channels; c++, dyIndex++) {
            if (bestAt[c] >= 0) dxValues[dxOffset + bestAt[c]] += dyValues[dyIndex];
          }
        }
      }
    }
    return dx;
  },
};
