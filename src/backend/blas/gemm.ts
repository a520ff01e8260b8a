/**
 * The one GEMM every kernel here is written against, with two engines: OpenBLAS through the native binding,
 * and a plain TypeScript loop that stands in when the binding is absent, so that the kernels the stock
 * backend lacks (the wasm backend's Conv2DBackpropFilter) exist, if slowly, on every machine.
 */
import type { BlasBinding } from './native.ts';
import type { FloatView } from './storage.ts';

/** A row-major matrix inside a Float32Array; offset, ld (row pitch) and stride (next batch) count elements. */
export interface MatrixView {
  array: Float32Array;
  offset: number;
  ld: number;
  /** Distance to the same matrix of the next batch; 0 repeats this one (a broadcast operand). Default 0. */
  stride?: number;
}

/**
 * The matrix starting `at` elements into a tensor's view. The row pitch is at least 1 as BLAS requires, even
 * for an empty matrix (whose pitch is never used). Spelled out rather than `{ ...view, ld }`: object spread
 * costs microseconds per call here, as much as a whole small GEMM.
 */
export function matrix(view: FloatView, ld: number, at = 0, stride = 0): MatrixView {
  return { array: view.array, offset: view.offset + at, ld: Math.max(1, ld), stride };
}

/** C = alpha·op(A)·op(B) + beta·C for `batch` products; op(A) is m×k, op(B) k×n. beta 0 ignores C's contents. */
export interface GemmCall {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  a: MatrixView;
  b: MatrixView;
  c: MatrixView;
  alpha?: number;
  beta?: number;
  batch?: number;
}

export type Gemm = (call: GemmCall) => void;

export function nativeGemm(binding: BlasBinding): Gemm {
  return ({ transA, transB, m, n, k, a, b, c, alpha = 1, beta = 0, batch = 1 }) => {
    if (batch === 1) {
      binding.sgemm(
        transA,
        transB,
        m,
        n,
        k,
        alpha,
        a.array,
        a.ld,
        a.offset,
        b.array,
        b.ld,
        b.offset,
        beta,
        c.array,
        c.ld,
        c.offset,
      );
      return;
    }
    binding.sgemmBatched(
      transA,
      transB,
      m,
      n,
      k,
      alpha,
      a.array,
      a.ld,
      a.offset,
      a.stride ?? 0,
      b.array,
      b.ld,
      b.offset,
      b.stride ?? 0,
      beta,
      c.array,
      c.ld,
      c.offset,
      c.stride ?? 0,
      batch,
    );
  };
}

/**
 * The same contract in TypeScript, for machines without the binding. i-p-j loop order, so that the inner loop
 * runs along rows of B and C; arrays in locals, because V8 does not hoist the property loads out of the loop.
 * About 0.8 GFLOP/s on one core (OpenBLAS: 60-80).
 */
export const referenceGemm: Gemm = ({ transA, transB, m, n, k, a, b, c, alpha = 1, beta = 0, batch = 1 }) => {
  const [aValues, bValues, cValues] = [a.array, b.array, c.array];
  // Element (row, col) of op(X) lives at offset + row * rowStep + col * colStep.
  const [aRow, aCol] = transA ? [1, a.ld] : [a.ld, 1];
  const [bRow, bCol] = transB ? [1, b.ld] : [b.ld, 1];
  for (let batchIndex = 0; batchIndex < batch; batchIndex++) {
    const aBase = a.offset + batchIndex * (a.stride ?? 0);
    const bBase = b.offset + batchIndex * (b.stride ?? 0);
    const cBase = c.offset + batchIndex * (c.stride ?? 0);
    for (let i = 0; i < m; i++) {
      const cRow = cBase + i * c.ld;
      for (let j = cRow; j < cRow + n; j++) cValues[j] = beta === 0 ? 0 : beta * cValues[j];
      for (let p = 0; p < k; p++) {
        const scaled = alpha * aValues[aBase + i * aRow + p * aCol];
        let bIndex = bBase + p * bRow;
        for (let j = cRow; j < cRow + n; j++, bIndex += bCol) cValues[j] += scaled * bValues[bIndex];
      }
    }
  }
};
