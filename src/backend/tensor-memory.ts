/**
 * A float32 tensor's elements where its backend keeps them: the engine adds each gradient into its flat buffer
 * straight from there instead of from a copy (`dataSync`). On backends whose memory kd-launch cannot reach
 * (tfjs-node) it reads through `dataSync`.
 *
 * Read-only by design: writing a tensor in place is wrong on the wasm backend, whose own kernels (XNNPACK) cache
 * a packed copy of a weight tensor for as long as it lives.
 */
import { STORAGE_BY_BACKEND, type TensorStorage } from './blas/storage.ts';
import { tf } from './tf.ts';

function storage(): TensorStorage | undefined {
  return STORAGE_BY_BACKEND[tf.getBackend()]?.(tf.backend());
}

/** The backend's own view of `t`'s elements, or undefined where it cannot be reached. */
function view(t: tf.Tensor): Float32Array | undefined {
  const s = t.dtype === 'float32' ? storage() : undefined;
  if (!s) return undefined;
  try {
    const v = s.view(t);
    return v.array.subarray(v.offset, v.offset + t.size);
  } catch {
    // Not this backend's tensor, or not held as float32 values: the caller copies.
    return undefined;
  }
}

/**
 * `t`'s elements: on wasm a view of the WebAssembly heap, on cpu the backend's own array; elsewhere what
 * `dataSync` returns. Use it at once and do not write to it: on wasm any later allocation may grow the heap, which
 * detaches the view.
 */
export function tensorFloats(t: tf.Tensor): Float32Array {
  return view(t) ?? (t.dataSync() as Float32Array);
}

/** Backends that copy a new tensor's values into memory of their own as the tensor is made (wasm: its heap). */
const COPY_ON_CREATE: ReadonlySet<string> = new Set(['wasm']);

/**
 * A tensor of `values` as they are now, which the caller goes on changing afterwards. The values are copied
 * first only where the backend would keep the array itself (cpu; tfjs-node reads it later): on wasm that copy
 * was one more pass over every parameter each step, and one more array for the collector.
 */
export function tensorOfCurrent(values: Float32Array, shape: readonly number[]): tf.Tensor {
  return tf.tensor(COPY_ON_CREATE.has(tf.getBackend()) ? values : values.slice(), [...shape]);
}
