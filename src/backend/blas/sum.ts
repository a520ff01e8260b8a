/**
 * Sum over the leading axes (a bias's gradient: the output gradient summed over the batch). Not a GEMM, but the
 * stock wasm kernel reduces only innermost axes, so it transposes a [128, 1024] gradient first: 0.6 ms of an MLP
 * step went to that transpose (bench/RESULTS.md). Here each column is summed in place, row after row, in fp32 as
 * the stock kernel sums (the same order, so the same bits: `KernelLoops.sumColumns`, in C with the binding); any
 * other axis, or dtype, goes to the stock kernel.
 */
import type { SumAttrs } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { type BlasKernel, required, requireFloat32, sizeOf, Unsupported } from './kernel.ts';

export const sumKernel: BlasKernel = {
  name: 'Sum',
  run({ inputs, attrs, storage, loops }) {
    const { x } = required(inputs, 'x');
    const unsupported = requireFloat32(x);
    if (unsupported !== undefined) return unsupported;
    const { axis, keepDims } = attrs as unknown as SumAttrs;
    // In the given order: the stock kernel reduces axes [1, 0] in that order, a different sum in fp32.
    const axes = tf.util.parseAxisParam(axis, x.shape);
    const leading = axes.length;
    if (leading === 0 || leading === x.shape.length || axes.some((a, i) => a !== i)) {
      return new Unsupported(`sum over axes [${axes}] of a rank-${x.shape.length} tensor`);
    }
    const rows = sizeOf(x.shape.slice(0, leading));
    const columns = sizeOf(x.shape.slice(leading));
    const out = storage.allocate(
      keepDims ? x.shape.map((d, i) => (i < leading ? 1 : d)) : x.shape.slice(leading),
    );
    const [xView, outView] = [storage.view(x), storage.view(out)];
    loops.sumColumns(xView.array, xView.offset, rows, columns, outView.array, outView.offset);
    return out;
  },
};
