/**
 * Resident memory (src/backend/resident.ts): tensors over the wasm heap without a copy, which read what the memory
 * holds, survive the heap's growth, free nothing of the block when they go, and leave nothing behind. The wasm
 * backend's own matrix multiply (XNNPACK), which caches a packed copy of a weight tensor by its id, must see new
 * values through a new tensor.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import { installKernels } from '../../src/backend/kernels/index.ts';
import { residentFloats } from '../../src/backend/resident.ts';

interface Heap {
  wasm: { HEAPF32: Float32Array; _malloc(bytes: number): number; _free(pointer: number): void };
  getMemoryOffset(dataId: object): number;
}

describe('resident memory on wasm', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    // The stock matmul: XNNPACK caches packed weights by tensor id. kd-launch's Identity: a clone shares memory.
    uninstallBlasKernels('wasm');
    installKernels('wasm');
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  it('makes tensors over the memory without a copy, and a new tensor sees new values', () => {
    const before = tf.memory();
    const block = residentFloats(8);
    expect(block.copies).toBe(false);
    block.values().set([1, 2, 3, 4, 5, 6, 7, 8]);
    const heap = tf.backend() as unknown as Heap;
    const w = block.tensor(2, [2, 2]);
    const x = tf.tensor2d([1, 0, 0, 1], [2, 2]);
    // The tensor's memory is the block's elements 2…5.
    expect(heap.getMemoryOffset(w.dataId)).toBe(block.values().byteOffset + 8);
    const y = tf.matMul(x, w);
    expect(Array.from(y.dataSync())).toEqual([3, 4, 5, 6]);
    // Written between steps, read through a new tensor (a new id: XNNPACK packs it again).
    w.dispose();
    block.values().set([10, 20, 30, 40], 2);
    const w2 = block.tensor(2, [2, 2]);
    const y2 = tf.matMul(x, w2);
    expect(Array.from(y2.dataSync())).toEqual([10, 20, 30, 40]);
    for (const t of [x, y, w2, y2]) t.dispose();
    block.dispose();
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
  });

  it('keeps its values across the heap growing, through a view taken again', () => {
    const block = residentFloats(1024);
    block.values().forEach((_, i, a) => {
      a[i] = i;
    });
    const early = block.values();
    const heap = tf.backend() as unknown as Heap;
    const size = heap.wasm.HEAPF32.buffer.byteLength;
    // Enough tensors to grow the heap past its size.
    const big = tf.zeros([size / 4 + 1024]);
    expect(heap.wasm.HEAPF32.buffer.byteLength).toBeGreaterThan(size);
    expect(early.length, 'the earlier view is detached').toBe(0);
    const now = block.values();
    expect(now[0]).toBe(0);
    expect(now[1023]).toBe(1023);
    const t = block.tensor(1000, [24]);
    expect(t.dataSync()[23]).toBe(1023);
    for (const x of [big, t]) x.dispose();
    block.dispose();
  });

  it('frees the block once it is disposed and its last tensor (and that tensor’s clones) is gone', () => {
    const heap = tf.backend() as unknown as Heap;
    const block = residentFloats(256);
    block.values().fill(7);
    const t = block.tensor(0, [16, 16]);
    const clone = tf.clone(t); // shares t's memory (kd-launch's Identity)
    block.dispose();
    t.dispose();
    // The block is still alive for the clone: a new allocation of its size lands elsewhere.
    const other = heap.wasm._malloc(1024);
    expect(other).not.toBe(block.values().byteOffset);
    expect(clone.dataSync()[255]).toBe(7);
    heap.wasm._free(other);
    const at = block.values().byteOffset;
    clone.dispose();
    // Now freed: the allocator hands the same place out again.
    const again = heap.wasm._malloc(1024);
    expect(again).toBe(at);
    heap.wasm._free(again);
  });

  it('refuses a tensor outside the memory, and one after dispose', () => {
    const block = residentFloats(4);
    expect(() => block.tensor(1, [4])).toThrow(/outside resident memory of 4/);
    block.dispose();
    expect(() => block.tensor(0, [1])).toThrow(/after dispose/);
  });
});
