/**
 * MaxPoolGrad: not a GEMM, but once the GEMMs are fast it is the slowest kernel of a CNN training step on the
 * wasm backend (about 30% of the step for a 2-conv MNIST CNN, against a few percent here). The gradient of
 * each pooling window goes to its maximum, the first one in row-major order on ties, as the stock kernels do
 * (`KernelLoops.maxPoolGrad`, in C with the binding).
 */
import type { MaxPoolGradAttrs } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { type BlasKernel, required, requireFloat32 } from './kernel.ts';

export const maxPoolGradKernel: BlasKernel = {
  name: 'MaxPoolGrad',
  run({ inputs, attrs, storage, loops }) {
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
    const [xView, dyView, dxView] = [storage.view(input), storage.view(dy), storage.view(dx)];
    const { padInfo } = info;
    loops.maxPoolGrad(
      { ...info, channels: info.inChannels, padTop: padInfo.top, padLeft: padInfo.left },
      xView.array,
      xView.offset,
      dyView.array,
      dyView.offset,
      dxView.array,
      dxView.offset,
    );
    return dx;
  },
};
