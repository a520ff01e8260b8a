/**
 * A float32 tensor's elements where its backend keeps them, read and written in place: the engine's gradient
 * read-out and parameter update then cost one pass over the memory instead of a copy into a fresh array
 * (`dataSync`) and a fresh tensor per parameter per step. On backends whose memory kd-launch cannot reach
 * (tfjs-node) reading copies and writing reports false, and the caller makes a new tensor.
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
 * `t`'s elements: on wasm a view of the WebAssembly heap, on cpu the backend's own array; elsewhere a copy. Use
 * it at once: on wasm any later allocation may grow the heap, which detaches the view.
 */
export function tensorFloats(t: tf.Tensor): Float32Array {
  return view(t) ?? (t.dataSync() as Float32Array);
}

/** Overwrites `t`'s elements with `values` in place; false (nothing written) where its memory cannot be reached. */
export function overwriteTensor(t: tf.Tensor, values: Float32Array): boolean {
  if (values.length !== t.size) throw new RangeError(`${values.length} values for a tensor of ${t.size}`);
  const target = view(t);
  target?.set(values);
  return target !== undefined;
}
