/**
 * Float32 memory that tensors are made over without a copy: the engine keeps the forward's parameters in it, the
 * optimizer updates them there, and each step's parameter tensors are new views of it (issue 19: the copy of
 * every parameter into new tensors was 1 ms of a 33 ms MLP step, plus the collector's work on what it freed).
 *
 * On wasm the memory is one block of the WebAssembly heap, and a tensor is registered at its place in the block
 * (`makeOutput` with a memory offset, as the backend's own C++ kernels register their outputs). Each tensor has a
 * new id, so the backend's XNNPACK kernels, which cache a packed copy of a weight tensor by its id for as long as
 * it lives, pack the new values. The backend frees a tensor's memory when its last reference goes; for a view of
 * this block that would free a pointer into the middle of it, so the backend's `disposeData` is wrapped to let go
 * of a view's registration without freeing, and the block is freed once it is disposed and no view lives.
 *
 * On other backends the memory is a Float32Array and a tensor is made over a copy of its part (the cpu backend
 * would keep the array itself; tfjs-node reads it later): no gain there, and no difference in what is computed.
 */
import type { DataId, TensorInfo } from '@tensorflow/tfjs';
import { residentCopies } from './names.ts';
import { tf } from './tf.ts';

export interface ResidentFloats {
  readonly length: number;
  /** Whether each tensor holds a copy of its part (more memory, as many bytes as the tensors). */
  readonly copies: boolean;
  /**
   * The elements, to read and write at once: on wasm any tfjs operation may grow the heap, which detaches every
   * earlier view. Take it again after any await; hand something asynchronous (a collective's output) the function
   * `() => memory.values()`, never the array.
   */
  values(): Float32Array;
  /**
   * A new tensor over elements [offset, offset + the shape's size): no copy on wasm. Its values are the memory's,
   * so write the memory only when every tensor made over it is unused (the engine writes between steps, then
   * makes new tensors and disposes the old).
   */
  tensor(offset: number, shape: readonly number[]): tf.Tensor;
  /** Frees the memory once no tensor made over it lives. */
  dispose(): void;
}

/** Resident memory of `length` zeroed elements on the current backend. */
export function residentFloats(length: number): ResidentFloats {
  const backend = tf.backend() as unknown as WasmInternals;
  return residentCopies(tf.getBackend()) ? new ArrayBlock(length) : new HeapBlock(backend, length);
}

class ArrayBlock implements ResidentFloats {
  readonly length: number;
  readonly copies = true;
  readonly #values: Float32Array;

  constructor(length: number) {
    this.length = length;
    this.#values = new Float32Array(length);
  }

  values(): Float32Array {
    return this.#values;
  }

  tensor(offset: number, shape: readonly number[]): tf.Tensor {
    const size = sizeOf(shape);
    checkRange(offset, size, this.length);
    return tf.tensor(this.#values.slice(offset, offset + size), [...shape]);
  }

  dispose(): void {}
}

/** The wasm backend's internals used here (tfjs-backend-wasm's BackendWasm). */
interface WasmInternals {
  wasm: {
    HEAPF32: Float32Array;
    _malloc(bytes: number): number;
    _free(pointer: number): void;
    tfjs: { disposeData(id: number): void };
  };
  dataIdMap: {
    get(dataId: DataId): { id: number; refCount: number } | undefined;
    delete(dataId: DataId): void;
  };
  makeOutput(shape: number[], dtype: 'float32', memoryOffset: number): TensorInfo;
  disposeData(dataId: DataId, force?: boolean): boolean;
}

class HeapBlock implements ResidentFloats {
  readonly length: number;
  readonly copies = false;
  readonly #backend: WasmInternals;
  readonly #pointer: number;
  #view: Float32Array;
  #views = 0;
  #disposed = false;

  constructor(backend: WasmInternals, length: number) {
    this.length = length;
    this.#backend = backend;
    const bytes = length * Float32Array.BYTES_PER_ELEMENT;
    // `>>> 0`: _malloc returns a signed int32, and offsets past 2 GiB are negative (as the backend does).
    this.#pointer = backend.wasm._malloc(Math.max(bytes, 1)) >>> 0;
    if (this.#pointer === 0) throw new Error(`the wasm heap has no room for ${bytes} bytes of parameters`);
    this.#view = this.#viewNow();
    this.#view.fill(0);
  }

  values(): Float32Array {
    if (this.#view.buffer !== this.#backend.wasm.HEAPF32.buffer) this.#view = this.#viewNow();
    return this.#view;
  }

  tensor(offset: number, shape: readonly number[]): tf.Tensor {
    if (this.#disposed) throw new Error('resident memory used after dispose');
    checkRange(offset, sizeOf(shape), this.length);
    const at = this.#pointer + offset * Float32Array.BYTES_PER_ELEMENT;
    const info = this.#backend.makeOutput([...shape], 'float32', at);
    viewsOf(this.#backend).set(info.dataId, this);
    this.#views++;
    return tf.engine().makeTensorFromTensorInfo(info, this.#backend as never);
  }

  dispose(): void {
    this.#disposed = true;
    this.#freeIfUnused();
  }

  /** The backend let go of one of this block's views. */
  released(): void {
    this.#views--;
    this.#freeIfUnused();
  }

  #freeIfUnused(): void {
    if (this.#disposed && this.#views === 0) this.#backend.wasm._free(this.#pointer);
  }

  #viewNow(): Float32Array {
    const heap = this.#backend.wasm.HEAPF32;
    return new Float32Array(heap.buffer, this.#pointer, this.length);
  }
}

/**
 * The views of resident blocks a wasm backend holds, by data id. Made on the backend's first view, with its
 * `disposeData` wrapped: a view's last reference unregisters it (so the C++ side drops its packed copies) without
 * freeing its memory, which belongs to the block.
 */
const VIEWS = new WeakMap<WasmInternals, Map<DataId, HeapBlock>>();

function viewsOf(backend: WasmInternals): Map<DataId, HeapBlock> {
  let views = VIEWS.get(backend);
  if (views) return views;
  const made = new Map<DataId, HeapBlock>();
  const dispose = backend.disposeData.bind(backend);
  backend.disposeData = (dataId, force = false) => {
    const block = made.get(dataId);
    if (!block) return dispose(dataId, force);
    const data = backend.dataIdMap.get(dataId);
    if (data === undefined) return true;
    data.refCount--;
    if (!force && data.refCount > 0) return false;
    backend.wasm.tfjs.disposeData(data.id);
    backend.dataIdMap.delete(dataId);
    made.delete(dataId);
    block.released();
    return true;
  };
  VIEWS.set(backend, made);
  views = made;
  return views;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkRange(offset: number, size: number, length: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + size > length) {
    throw new RangeError(`a tensor of ${size} elements at ${offset} is outside resident memory of ${length}`);
  }
}
