/**
 * The OpenBLAS binding itself: GEMM in place on offsets into larger arrays (as on the wasm heap), the batched
 * form with a shared operand, the bounds checks that keep a bad offset from writing outside an array, and the
 * TypeScript GEMM (the fallback) agreeing with it.
 */
import { describe, expect, it } from 'vitest';
import { type GemmCall, nativeGemm, referenceGemm } from '../../src/backend/blas/gemm.ts';
import { type BlasBinding, defaultBlasThreads } from '../../src/backend/blas/native.ts';
import { binding, expectClose, NO_BINDING, NO_BINDING_REASON, randomArray } from './helpers.ts';

/** op(A)·op(B) for one product, in float64, straight from the definition. */
function naive(call: GemmCall, batchIndex: number): Float64Array {
  const { transA, transB, m, n, k, a, b } = call;
  const out = new Float64Array(m * n);
  const aBase = a.offset + batchIndex * (a.stride ?? 0);
  const bBase = b.offset + batchIndex * (b.stride ?? 0);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) {
        const aij = a.array[aBase + (transA ? p * a.ld + i : i * a.ld + p)];
        const bij = b.array[bBase + (transB ? j * b.ld + p : p * b.ld + j)];
        sum += aij * bij;
      }
      out[i * n + j] = sum;
    }
  }
  return out;
}

/** A call on matrices placed at odd offsets, with padded rows, inside arrays bigger than they need. */
function paddedCall(transA: boolean, transB: boolean, batch: number, shareB: boolean): GemmCall {
  const [m, n, k] = [5, 7, 3];
  const [lda, ldb, ldc] = [(transA ? m : k) + 2, (transB ? k : n) + 1, n + 3];
  const [aRows, bRows] = [transA ? k : m, transB ? n : k];
  return {
    transA,
    transB,
    m,
    n,
    k,
    a: { array: randomArray(13 + batch * aRows * lda, 1), offset: 13, ld: lda, stride: aRows * lda },
    b: {
      array: randomArray(7 + batch * bRows * ldb, 2),
      offset: 7,
      ld: ldb,
      stride: shareB ? 0 : bRows * ldb,
    },
    c: { array: new Float32Array(3 + batch * m * ldc + 5).fill(99), offset: 3, ld: ldc, stride: m * ldc },
    batch,
  };
}

function checkResult(call: GemmCall): void {
  const { m, n, c, batch = 1 } = call;
  for (let bi = 0; bi < batch; bi++) {
    const expected = naive(call, bi);
    const actual = new Float32Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) actual[i * n + j] = c.array[c.offset + bi * (c.stride ?? 0) + i * c.ld + j];
    }
    expectClose(actual, Float32Array.from(expected));
  }
  // Padding between rows and around the matrices is untouched.
  expect(c.array[0]).toBe(99);
  expect(c.array[c.offset + n]).toBe(99);
  expect(c.array[c.array.length - 1]).toBe(99);
}

const TRANSPOSES = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

describe('the TypeScript GEMM (fallback)', () => {
  for (const [transA, transB] of TRANSPOSES) {
    it(`transA=${transA} transB=${transB}, batched with a shared B`, () => {
      const call = paddedCall(transA, transB, 3, true);
      referenceGemm(call);
      checkResult(call);
    });
  }
});

describe.skipIf(NO_BINDING)(`the OpenBLAS binding (${NO_BINDING ? NO_BINDING_REASON : 'built'})`, () => {
  const native = binding as BlasBinding;
  const gemm = nativeGemm(native);

  for (const [transA, transB] of TRANSPOSES) {
    it(`sgemm and sgemmBatched in place, transA=${transA} transB=${transB}`, () => {
      for (const [batch, shareB] of [
        [1, false],
        [4, false],
        [3, true],
      ] as const) {
        const call = paddedCall(transA, transB, batch, shareB);
        gemm(call);
        checkResult(call);
      }
    });
  }

  it('works on subarray views (offsets count from the view, not its buffer)', () => {
    const buffer = new Float32Array(16);
    const [a, b, c] = [buffer.subarray(1, 5), buffer.subarray(6, 10), buffer.subarray(11, 15)];
    a.set([1, 2, 3, 4]);
    b.set([1, 0, 0, 1]);
    native.sgemm(false, false, 2, 2, 2, 1, a, 2, 0, b, 2, 0, 0, c, 2, 0);
    expect([...c]).toEqual([1, 2, 3, 4]);
    expect([buffer[10], buffer[15]]).toEqual([0, 0]);
  });

  it('accumulates with beta = 1 and scales with alpha', () => {
    const a = new Float32Array([1, 2, 3, 4]);
    const c = new Float32Array([10, 20, 30, 40]);
    native.sgemm(false, false, 2, 2, 2, 2, a, 2, 0, new Float32Array([1, 0, 0, 1]), 2, 0, 1, c, 2, 0);
    expect([...c]).toEqual([12, 24, 36, 48]);
  });

  it('refuses matrices that do not fit their arrays, before writing anything', () => {
    const a = new Float32Array(6);
    const c = new Float32Array(4).fill(7);
    const call = (offsetC: number, ldc: number) => () =>
      native.sgemm(false, false, 2, 2, 3, 1, a, 3, 0, new Float32Array(6), 2, 0, 0, c, ldc, offsetC);
    expect(call(1, 2)).toThrow(RangeError);
    expect(call(0, 1)).toThrow(/does not fit/);
    expect(() =>
      native.sgemmBatched(
        false,
        false,
        2,
        2,
        3,
        1,
        a,
        3,
        0,
        6,
        new Float32Array(6),
        2,
        0,
        0,
        0,
        c,
        2,
        0,
        4,
        2,
      ),
    ).toThrow(RangeError);
    expect([...c]).toEqual([7, 7, 7, 7]);
    expect(() => native.sgemm(false, false, -1, 2, 3, 1, a, 3, 0, a, 2, 0, 0, c, 2, 0)).toThrow(RangeError);
    const sgemm = native.sgemm as (...args: unknown[]) => void;
    expect(() => sgemm(false, false, 1, 1, 1, 1, new Float64Array(1), 1, 0, a, 1, 0, 0, c, 1, 0)).toThrow(
      /Float32Array/,
    );
    expect(() => sgemm(false, false, 1)).toThrow(TypeError);
  });

  it('reports the library and takes a thread count', () => {
    const info = native.info();
    expect(info.library).toBe('OpenBLAS');
    expect(info.config).toMatch(/OpenBLAS \d+\.\d+/);
    native.setThreads(2);
    expect(native.info().threads).toBeGreaterThanOrEqual(1);
    native.setThreads(1);
    expect(native.info().threads).toBe(1);
    expect(() => native.setThreads(0)).toThrow(RangeError);
  });
});

describe('BLAS threads per worker', () => {
  it('default to 1; KD_BLAS_THREADS, then OPENBLAS_NUM_THREADS, override', () => {
    expect(defaultBlasThreads({})).toBe(1);
    expect(defaultBlasThreads({ OPENBLAS_NUM_THREADS: '4' })).toBe(4);
    expect(defaultBlasThreads({ OPENBLAS_NUM_THREADS: '4', KD_BLAS_THREADS: '2' })).toBe(2);
    expect(defaultBlasThreads({ OPENBLAS_NUM_THREADS: 'lots' })).toBe(1);
  });
});
