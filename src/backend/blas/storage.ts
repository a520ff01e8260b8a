/**
 * Where a backend keeps a float32 tensor's elements, so that GEMM can run on them in place: the wasm backend
 * keeps every tensor in its WebAssembly heap (one Float32Array over the whole heap, plus an offset), the cpu
 * backend keeps one Float32Array per tensor. Neither copies anything.
 *
 * The tfjs backends' fields used here are internal; the narrow interfaces below declare just what is read.
 */
import type { DataId, TensorInfo } from '@tensorflow/tfjs';
import { sizeOf } from './kernel.ts';

/** The elements of one tensor: array[offset … offset + size). */
export interface FloatView {
  array: Float32Array;
  offset: number;
}

export interface TensorStorage {
  /**
   * A new float32 tensor of the backend. On wasm this can grow the heap, which replaces the heap's
   * ArrayBuffer: take every view() only after the last allocate() of a kernel.
   */
  allocate(shape: number[]): TensorInfo;
  view(tensor: TensorInfo): FloatView;
}

interface WasmBackendInternals {
  wasm: { HEAPF32: Float32Array };
  dataIdMap: { get(dataId: DataId): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
}

interface CpuBackendInternals {
  data: { get(dataId: DataId): { values?: unknown } | undefined };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
}

function wasmStorage(backend: WasmBackendInternals): TensorStorage {
  return {
    allocate: (shape) => backend.makeOutput(shape, 'float32'),
    view(tensor) {
      const data = backend.dataIdMap.get(tensor.dataId);
      if (data === undefined)
        throw new Error('kd-launch BLAS kernels: tensor data not found on the wasm backend');
      // Read HEAPF32 now, not once: it is a new array every time the heap has grown.
      return { array: backend.wasm.HEAPF32, offset: data.memoryOffset / Float32Array.BYTES_PER_ELEMENT };
    },
  };
}

function cpuStorage(backend: CpuBackendInternals): TensorStorage {
  return {
    allocate: (shape) => backend.makeTensorInfo(shape, 'float32', new Float32Array(sizeOf(shape))),
    view(tensor) {
      const values = backend.data.get(tensor.dataId)?.values;
      if (!(values instanceof Float32Array)) {
        throw new Error('kd-launch BLAS kernels: expected float32 values on the cpu backend');
      }
      return { array: values, offset: 0 };
    },
  };
}

/** One storage per backend instance, made on its first kernel call (making one per call costs microseconds). */
function perBackend(make: (backend: object) => TensorStorage): (backend: object) => TensorStorage {
  const made = new WeakMap<object, TensorStorage>();
  return (backend) => {
    let storage = made.get(backend);
    if (storage === undefined) {
      storage = make(backend);
      made.set(backend, storage);
    }
    return storage;
  };
}

/** The backends whose memory the kernels know how to reach, by tfjs backend name. */
export const STORAGE_BY_BACKEND: Readonly<Record<string, (backend: object) => TensorStorage>> = {
  wasm: perBackend((backend) => wasmStorage(backend as WasmBackendInternals)),
  cpu: perBackend((backend) => cpuStorage(backend as CpuBackendInternals)),
};
