/** BatchMatMul and _FusedMatMul as GEMMs on the tensors' own memory: every transpose form, batch broadcasting. */
import type { _FusedMatMulAttrs, BatchMatMulAttrs, TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { activationFunction, applyInPlace, checkBias, fillRowsWithBias } from './activation.ts';
import { type Gemm, matrix } from './gemm.ts';
import { type BlasKernel, required, requireFloat32, sizeOf, Unsupported } from './kernel.ts';
import type { TensorStorage } from './storage.ts';

/** The GEMM shape of a batched product: op(a) is m×k, op(b) k×n, for each index of the broadcast batch dims. */
interface MatMulPlan {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  batchDimsA: number[];
  batchDimsB: number[];
  batchDims: number[];
}

function planMatMul(
  a: TensorInfo,
  b: TensorInfo,
  transA: boolean,
  transB: boolean,
): MatMulPlan | Unsupported {
  const [a1, a2] = a.shape.slice(-2);
  const [b1, b2] = b.shape.slice(-2);
  const [m, kA] = transA ? [a2, a1] : [a1, a2];
  const [kB, n] = transB ? [b2, b1] : [b1, b2];
  // Malformed calls go to the stock kernel, whose error messages users already know.
  if (a.shape.length < 2 || b.shape.length < 2 || kA !== kB) return new Unsupported('mismatched shapes');
  const batchDimsA = a.shape.slice(0, -2);
  const batchDimsB = b.shape.slice(0, -2);
  const batchDims = tf.broadcast_util.assertAndGetBroadcastShape(batchDimsA, batchDimsB);
  return { m, n, k: kA, transA, transB, batchDimsA, batchDimsB, batchDims };
}

/** Index into `dims` (right-aligned under `outDims`, size-1 dims broadcast) of batch index `outIndex`. */
function broadcastIndex(outIndex: number, outDims: number[], dims: number[]): number {
  let index = 0;
  let stride = 1;
  let rest = outIndex;
  for (let d = outDims.length - 1; d >= 0; d--) {
    const coord = rest % outDims[d];
    rest = Math.floor(rest / outDims[d]);
    const dimIndex = d - (outDims.length - dims.length);
    if (dimIndex < 0) continue;
    if (dims[dimIndex] !== 1) index += coord * stride;
    stride *= dims[dimIndex];
  }
  return index;
}

/** out = op(a)·op(b) (+ out when accumulate), out's batch dims being plan.batchDims. */
function runMatMul(
  plan: MatMulPlan,
  gemm: Gemm,
  storage: TensorStorage,
  a: TensorInfo,
  b: TensorInfo,
  out: TensorInfo,
  accumulate: boolean,
): void {
  const { m, n, k, transA, transB, batchDimsA, batchDimsB, batchDims } = plan;
  const [aView, bView, cView] = [storage.view(a), storage.view(b), storage.view(out)];
  const [lda, ldb] = [transA ? m : k, transB ? k : n];
  const batch = sizeOf(batchDims);
  const [batchA, batchB] = [sizeOf(batchDimsA), sizeOf(batchDimsB)];
  const beta = accumulate ? 1 : 0;
  if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
    // Same batch dims, or one operand shared by every product: one strided call.
    gemm({
      transA,
      transB,
      m,
      n,
      k,
      a: matrix(aView, lda, 0, batchA === 1 ? 0 : m * k),
      b: matrix(bView, ldb, 0, batchB === 1 ? 0 : k * n),
      c: matrix(cView, n, 0, m * n),
      beta,
      batch,
    });
    return;
  }
  // A general broadcast ([2,1] against [1,3], say): one GEMM per product.
  for (let i = 0; i < batch; i++) {
    gemm({
      transA,
      transB,
      m,
      n,
      k,
      a: matrix(aView, lda, broadcastIndex(i, batchDims, batchDimsA) * m * k),
      b: matrix(bView, ldb, broadcastIndex(i, batchDims, batchDimsB) * k * n),
      c: matrix(cView, n, i * m * n),
      beta,
    });
  }
}

export const batchMatMulKernel: BlasKernel = {
  name: 'BatchMatMul',
  run({ inputs, attrs, storage, gemm }) {
    const { a, b } = required(inputs, 'a', 'b');
    const { transposeA, transposeB } = attrs as unknown as BatchMatMulAttrs;
    const plan = requireFloat32(a, b) ?? planMatMul(a, b, transposeA, transposeB);
    if (plan instanceof Unsupported) return plan;
    const out = storage.allocate([...plan.batchDims, plan.m, plan.n]);
    runMatMul(plan, gemm, storage, a, b, out, false);
    return out;
  },
};

export const fusedMatMulKernel: BlasKernel = {
  name: '_FusedMatMul',
  run({ inputs, attrs, storage, gemm }) {
    const { a, b } = required(inputs, 'a', 'b');
    const { bias } = inputs;
    const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as unknown as _FusedMatMulAttrs;
    const fn = activationFunction(activation, leakyreluAlpha);
    const plan = requireFloat32(a, b, bias) ?? planMatMul(a, b, transposeA, transposeB);
    if (plan instanceof Unsupported) return plan;
    if (fn instanceof Unsupported) return fn;
    const biasProblem = checkBias(bias, plan.n);
    if (biasProblem !== undefined) return biasProblem;

    const out = storage.allocate([...plan.batchDims, plan.m, plan.n]);
    const rows = sizeOf(plan.batchDims) * plan.m;
    if (bias !== undefined) {
      fillRowsWithBias(storage.view(out), rows, plan.n, storage.view(bias), sizeOf(bias.shape));
    }
    runMatMul(plan, gemm, storage, a, b, out, bias !== undefined);
    if (fn !== undefined) applyInPlace(storage.view(out), rows * plan.n, fn);
    return out;
  },
};
