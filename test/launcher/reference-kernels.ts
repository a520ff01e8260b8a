/**
 * For suites that hold two runs of different batch geometry equal (world 2 × micro-batch 8 against world 1 × 16,
 * accumulation against one large micro-batch, a teacher's logits over 256 rows against 8): their workers run on
 * the stock kernels (KD_BLAS=off) for the suite's duration.
 *
 * Why: OpenBLAS picks its kernel by CPU (Haswell, SkylakeX, Zen… or OPENBLAS_CORETYPE), and within one kernel
 * the order in which it sums an output depends on the matrix's size (small-matrix kernels, edge tiles). So the
 * same sample's row differs in its last bits between a GEMM of 8 rows and one of 16, by an amount that changes
 * with the machine, and Adam (whose m/√v turns the last bits of a near-zero gradient into an lr-sized step) and
 * distillation (T² × the soft loss) carry it into the weights. TensorFlow.js's own kernels sum every output in a
 * fixed order that depends on neither the CPU nor the number of rows: what is left between the two runs is the
 * distributed algorithm's own rounding. The BLAS kernels are held equal to those reference kernels op by op in
 * test/backend/blas-kernels.test.ts.
 */
import { afterAll, beforeAll } from 'vitest';

export function useReferenceKernels(): void {
  let before: string | undefined;
  beforeAll(() => {
    before = process.env.KD_BLAS;
    // Inherited by every worker the suite's launches start.
    process.env.KD_BLAS = 'off';
  });
  afterAll(() => {
    if (before === undefined) delete process.env.KD_BLAS;
    else process.env.KD_BLAS = before;
  });
}
