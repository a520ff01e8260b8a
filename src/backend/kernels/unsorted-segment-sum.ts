/**
 * UnsortedSegmentSum on the wasm backend, which has none: it is the gradient of `tf.gather` (an embedding
 * lookup), so without it no model with an embedding trains on wasm. out[s, …] = Σ x[i, …] over the rows i whose
 * segment id is s; ids outside [0, numSegments) contribute nothing, as in TensorFlow and the cpu kernel.
 *
 * It reads and writes the tensors in place on the WebAssembly heap. The stock cpu kernel builds one mask and one
 * reduction per segment (numSegments × size work); this is one pass over x.
 */
import type { KernelConfig, TensorInfo, UnsortedSegmentSumAttrs } from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export const UNSORTED_SEGMENT_SUM = 'UnsortedSegmentSum';

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((size, dim) => size * dim, 1);
}

/**
 * The sum itself, on plain arrays (x: one row of `inner` values per id), into `out`, which holds
 * numSegments × inner values and is zeroed here.
 */
function segmentSumInto(
  x: Float32Array | Int32Array,
  ids: Int32Array,
  inner: number,
  numSegments: number,
  out: Float32Array | Int32Array,
): void {
  out.fill(0);
  for (let row = 0; row < ids.length; row++) {
    const s = ids[row];
    if (s < 0 || s >= numSegments) continue;
    const from = row * inner;
    const to = s * inner;
    for (let k = 0; k < inner; k++) out[to + k] += x[from + k];
  }
}

function unsortedSegmentSumWasm(
  backend: BackendWasm,
  x: TensorInfo,
  segmentIds: TensorInfo,
  numSegments: number,
): TensorInfo {
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new Error(`kd-launch: UnsortedSegmentSum on wasm supports float32 and int32 x, not ${x.dtype}`);
  }
  // tfjs' op allows segment ids over the leading dimensions of x, not only the first.
  const idRank = segmentIds.shape.length;
  const inner = sizeOf(x.shape.slice(idRank));
  const out = backend.makeOutput([numSegments, ...x.shape.slice(idRank)], x.dtype);
  // Views only after the last allocation: makeOutput can grow the heap and detach earlier views.
  const xs = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const ids = backend.typedArrayFromHeap(segmentIds) as Int32Array;
  const outs = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
  segmentSumInto(xs, ids, inner, numSegments, outs);
  return out;
}

export const unsortedSegmentSumWasmConfig: KernelConfig = {
  kernelName: UNSORTED_SEGMENT_SUM,
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { x, segmentIds } = inputs;
    if (x === undefined || segmentIds === undefined) {
      throw new Error('kd-launch: UnsortedSegmentSum needs inputs x and segmentIds');
    }
    const { numSegments } = attrs as unknown as UnsortedSegmentSumAttrs;
    return unsortedSegmentSumWasm(backend as BackendWasm, x, segmentIds, numSegments);
  },
};
