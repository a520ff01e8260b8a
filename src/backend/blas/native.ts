/**
 * Loads kd-launch's OpenBLAS binding (native/build/kd_blas.node, built by native/build.mjs at install time).
 * The binding is optional: when it is absent, fails to load, or KD_BLAS=off, the loader says why and the
 * caller keeps the stock TensorFlow.js kernels. (The fp16/bf16 wire codec's binding, native/build/kd_half.node,
 * is loaded by src/comm/half-binding.ts; every binding through src/base/native-module.ts.)
 */
import { type NativeLoad, nativeModule } from '../../base/native-module.ts';
import type { KernelLoops } from './loops.ts';

/** What the binding reports about the library it was linked against. */
export interface NativeBlasInfo {
  library: string;
  /** openblas_get_config(): version and build options, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64". */
  config: string;
  /** The CPU kernel set OpenBLAS picked for this machine, e.g. "Zen". */
  corename: string;
  threads: number;
}

/** The functions native/blas.c exports. Offsets, strides and leading dimensions count elements. */
export interface BlasBinding {
  /** C = alpha·op(A)·op(B) + beta·C on row-major matrices, in place in the given arrays. */
  sgemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    lda: number,
    offsetA: number,
    b: Float32Array,
    ldb: number,
    offsetB: number,
    beta: number,
    c: Float32Array,
    ldc: number,
    offsetC: number,
  ): void;
  /** `batch` sgemm products, each operand `stride` elements after the previous one (0: the same operand). */
  sgemmBatched(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    lda: number,
    offsetA: number,
    strideA: number,
    b: Float32Array,
    ldb: number,
    offsetB: number,
    strideB: number,
    beta: number,
    c: Float32Array,
    ldc: number,
    offsetC: number,
    strideC: number,
    batch: number,
  ): void;
  info(): NativeBlasInfo;
  setThreads(threads: number): void;
  /** loops.ts's `im2col`, with the plan's fields spelled out. */
  im2col(
    runs: Int32Array,
    images: number,
    patchPerImage: number,
    inputPerImage: number,
    complete: boolean,
    source: Float32Array,
    sourceOffset: number,
    patches: Float32Array,
  ): void;
  /** loops.ts's `col2imAdd`, with the plan's fields spelled out. */
  col2imAdd(
    runs: Int32Array,
    images: number,
    patchPerImage: number,
    inputPerImage: number,
    patches: Float32Array,
    dest: Float32Array,
    destOffset: number,
  ): void;
  /** loops.ts's `maxPoolGrad`, with the geometry's fields spelled out in PoolGeometry's order. */
  maxPoolGrad(
    x: Float32Array,
    xOffset: number,
    dy: Float32Array,
    dyOffset: number,
    dx: Float32Array,
    dxOffset: number,
    ...geometry: number[]
  ): void;
  /** loops.ts's `sumColumns`, with the same arguments. */
  sumColumns: KernelLoops['sumColumns'];
}

const blasModule = nativeModule<BlasBinding>(
  'kd_blas',
  'KD_BLAS',
  'the OpenBLAS binding',
  '`sh native/get-openblas.sh && node native/build.mjs` gets it on Debian/Ubuntu',
);

/**
 * The binding, or undefined and the reason it is not used. KD_BLAS=off is read on every call so that a test
 * or a user can switch the fast path off in-process; a successful load is kept (a .node cannot be unloaded).
 */
export const loadBlasBinding = (): NativeLoad<BlasBinding> => blasModule.load();

/**
 * BLAS threads per process: one by default, because kd-launch runs one worker per core and threads inside
 * each worker would fight over the same cores. OPENBLAS_NUM_THREADS (or KD_BLAS_THREADS, which wins)
 * overrides that, e.g. for a single worker on a big machine.
 */
export function defaultBlasThreads(env: NodeJS.ProcessEnv = process.env): number {
  for (const value of [env.KD_BLAS_THREADS, env.OPENBLAS_NUM_THREADS]) {
    const threads = Number(value);
    if (value !== undefined && Number.isInteger(threads) && threads >= 1) return threads;
  }
  return 1;
}
