/**
 * Identity on the wasm backend without a copy: the output shares the input's memory (one more reference), as the
 * cpu backend's Identity does. The stock wasm kernel copies the tensor, and tfjs runs Identity on every tensor a
 * gradient tape saves (`clone` in `saveTensorsForBackwardMode`): each step of an MLP copied its weights and
 * activations once more (1.35 ms of a 36 ms step, bench/RESULTS.md). Sharing is safe because no kernel writes
 * its inputs: a tensor's memory is fixed from its creation to its last reference.
 */
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

function identityWasm(args: { inputs: { x: TensorInfo }; backend: BackendWasm }): TensorInfo {
  const { x } = args.inputs;
  args.backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

export const identityWasmConfig: KernelConfig = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: identityWasm as unknown as KernelConfig['kernelFunc'],
};
