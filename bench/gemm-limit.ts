/**
 * The limit a training step is measured against: the time of its GEMMs alone, as OpenBLAS sgemm runs them called
 * directly on the same shapes on one thread, with nothing else of the step around them.
 */
import type { BlasBinding } from '../src/backend/blas/native.ts';

/** Seconds each measurement runs for, to average out timer and scheduling noise. */
const MEASURE_S = 0.4;
/** Seconds of calls before measuring, so that the JIT has compiled the kernel's JavaScript. */
const WARM_UP_S = 0.1;

export interface GemmShape {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Where the product occurs in the training step. */
  role: string;
}

/**
 * The products of one training step of an MLP with these layer widths at this batch: y = x·W forward,
 * dx = dy·Wᵀ and dW = xᵀ·dy backward (no dx for the input).
 */
export function mlpGemms(layers: readonly number[], batch: number): GemmShape[] {
  const shapes: GemmShape[] = [];
  for (let l = 0; l < layers.length - 1; l++) {
    const [inputs, outputs] = [layers[l], layers[l + 1]];
    shapes.push({ m: batch, n: outputs, k: inputs, transA: false, transB: false, role: `forward ${l + 1}` });
    if (l > 0)
      shapes.push({ m: batch, n: inputs, k: outputs, transA: false, transB: true, role: `dx ${l + 1}` });
    shapes.push({ m: inputs, n: outputs, k: batch, transA: true, transB: false, role: `dW ${l + 1}` });
  }
  return shapes;
}

/** Mean seconds per call of `run` over at least `minCalls` calls and MEASURE_S, after WARM_UP_S of calls. */
export function secondsPerCall(run: (i: number) => void, minCalls = 3): number {
  const warmUpStart = performance.now();
  do run(0);
  while (performance.now() - warmUpStart < WARM_UP_S * 1000);
  const start = performance.now();
  let calls = 0;
  while (calls < minCalls || performance.now() - start < MEASURE_S * 1000) run(++calls);
  return (performance.now() - start) / 1000 / calls;
}

/** Seconds per OpenBLAS sgemm of `shape`, called directly. */
export function blasSeconds(binding: BlasBinding, { m, n, k, transA, transB }: GemmShape): number {
  const a = new Float32Array(m * k).fill(0.5);
  const b = new Float32Array(k * n).fill(0.25);
  const c = new Float32Array(m * n);
  const [lda, ldb] = [transA ? m : k, transB ? k : n];
  return secondsPerCall(() => binding.sgemm(transA, transB, m, n, k, 1, a, lda, 0, b, ldb, 0, 0, c, n, 0));
}

/**
 * Seconds of all the GEMMs of one step of that MLP (sgemm direct, summed over the step's products), on one BLAS
 * thread as a worker runs them (OpenBLAS's own default is a thread per core).
 */
export function mlpGemmSeconds(binding: BlasBinding, layers: readonly number[], batch: number): number {
  binding.setThreads(1);
  return mlpGemms(layers, batch).reduce((sum, shape) => sum + blasSeconds(binding, shape), 0);
}
