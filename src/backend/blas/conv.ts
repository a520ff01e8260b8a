/**
 * Conv2D and both of its gradients as GEMMs over an im2col matrix (NHWC, any stride and padding, dilation 1):
 *
 *   patches[b·oh·ow, fh·fw·cin] = the input window under each output pixel (zeros in the padding)
 *   Conv2D                 y[b·oh·ow, cout]     = patches · W[fh·fw·cin, cout]
 *   Conv2DBackpropFilter   dW[fh·fw·cin, cout]  = patchesᵀ · dy[b·oh·ow, cout]
 *   Conv2DBackpropInput    dx                   = col2im(dy · Wᵀ)   (each patch row added back to its window)
 *
 * The patch matrix is built a few images at a time in a reused scratch buffer, so its memory stays bounded
 * (a batch-128 28×28 3×3×32 convolution would need 115 MB at once) and in cache.
 */
import type {
  Conv2DAttrs,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  FusedConv2DAttrs,
  TensorInfo,
} from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { activationFunction, applyInPlace, checkBias, fillRowsWithBias } from './activation.ts';
import { type Gemm, matrix } from './gemm.ts';
import { type BlasKernel, required, requireFloat32, sizeOf, Unsupported } from './kernel.ts';
import type { KernelLoops, PatchPlan } from './loops.ts';
import type { FloatView } from './storage.ts';

/** Elements of patch matrix built at once: 1 MiB, so that it is still in cache when the GEMM reads it (measured
 * faster than 4 or 16 MiB). At least one image per chunk, however big. */
const PATCH_BUDGET = 256 * 1024;

let scratch = new Float32Array(0);

function scratchOf(size: number): Float32Array {
  if (scratch.length < size) scratch = new Float32Array(size);
  return scratch;
}

type ConvInfo = tf.backend_util.Conv2DInfo;
type ConvAttrs = Pick<Conv2DAttrs, 'strides' | 'pad' | 'dataFormat' | 'dimRoundingMode'> & {
  dilations?: Conv2DAttrs['dilations'];
};

/** The convolution's geometry, or Unsupported for what im2col here does not do (NCHW, dilation). */
function convGeometry(xShape: number[], filterShape: number[], attrs: ConvAttrs): ConvInfo | Unsupported {
  if (attrs.dataFormat === 'NCHW') return new Unsupported('dataFormat NCHW');
  if ([attrs.dilations ?? 1].flat().some((d) => d !== 1)) return new Unsupported('dilations > 1');
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
}

interface Chunk {
  /** First image and number of images of this chunk. */
  image: number;
  images: number;
  /** Rows of the patch matrix before this chunk, and in it. */
  firstRow: number;
  rows: number;
}

/** The batch in runs of images whose patch matrix fits PATCH_BUDGET (at least one image per run). */
function* chunks(info: ConvInfo): Generator<Chunk> {
  const rowsPerImage = info.outHeight * info.outWidth;
  const perImage = rowsPerImage * info.filterHeight * info.filterWidth * info.inChannels;
  const step = Math.max(1, Math.floor(PATCH_BUDGET / Math.max(1, perImage)));
  for (let image = 0; image < info.batchSize; image += step) {
    const images = Math.min(step, info.batchSize - image);
    yield { image, images, firstRow: image * rowsPerImage, rows: images * rowsPerImage };
  }
}

/**
 * The patch runs of one image (`PatchPlan`): a run is one filter row's taps inside the image, contiguous in NHWC.
 * The runs are the same for every image, so they are worked out once per call and the copies in im2col / col2im
 * are plain loops over them.
 */
export function patchPlan(info: ConvInfo): PatchPlan {
  const { inHeight, inWidth, inChannels, outHeight, outWidth, filterHeight, filterWidth } = info;
  const { strideHeight, strideWidth, padInfo } = info;
  const width = patchWidth(info);
  const runs = new Int32Array(outHeight * outWidth * filterHeight * 3);
  let count = 0;
  let covered = 0;
  for (let oy = 0; oy < outHeight; oy++) {
    for (let ox = 0; ox < outWidth; ox++) {
      const x0 = ox * strideWidth - padInfo.left;
      const [xa, xb] = [Math.max(0, x0), Math.min(inWidth, x0 + filterWidth)];
      for (let fy = 0; fy < filterHeight; fy++) {
        const y = oy * strideHeight - padInfo.top + fy;
        if (y < 0 || y >= inHeight || xb <= xa) continue;
        runs[count++] = (oy * outWidth + ox) * width + (fy * filterWidth + xa - x0) * inChannels;
        runs[count++] = (y * inWidth + xa) * inChannels;
        runs[count++] = (xb - xa) * inChannels;
        covered += (xb - xa) * inChannels;
      }
    }
  }
  const patchPerImage = outHeight * outWidth * width;
  return {
    runs: runs.subarray(0, count),
    complete: covered === patchPerImage,
    patchPerImage,
    inputPerImage: inHeight * inWidth * inChannels,
  };
}

function patchWidth(info: ConvInfo): number {
  return info.filterHeight * info.filterWidth * info.inChannels;
}

export const conv2DKernel: BlasKernel = {
  name: 'Conv2D',
  run({ inputs, attrs, storage, gemm, loops }) {
    const { x, filter } = required(inputs, 'x', 'filter');
    const info =
      requireFloat32(x, filter) ?? convGeometry(x.shape, filter.shape, attrs as unknown as Conv2DAttrs);
    if (info instanceof Unsupported) return info;
    const out = storage.allocate(info.outShape);
    convolve(info, gemm, loops, storage.view(x), storage.view(filter), storage.view(out), false);
    return out;
  },
};

/** Conv2D forward; with accumulate the GEMM adds to what out holds (a bias already written there). */
function convolve(
  info: ConvInfo,
  gemm: Gemm,
  loops: KernelLoops,
  x: FloatView,
  filter: FloatView,
  out: FloatView,
  accumulate: boolean,
): void {
  const width = patchWidth(info);
  const cout = info.outChannels;
  const plan = patchPlan(info);
  for (const chunk of chunks(info)) {
    const patches = scratchOf(chunk.rows * width);
    loops.im2col(plan, chunk.images, x.array, x.offset + chunk.image * plan.inputPerImage, patches);
    gemm({
      transA: false,
      transB: false,
      m: chunk.rows,
      n: cout,
      k: width,
      a: matrix({ array: patches, offset: 0 }, width),
      b: matrix(filter, cout),
      c: matrix(out, cout, chunk.firstRow * cout),
      beta: accumulate ? 1 : 0,
    });
  }
}

export const fusedConv2DKernel: BlasKernel = {
  name: 'FusedConv2D',
  run({ inputs, attrs, storage, gemm, loops }) {
    const { x, filter } = required(inputs, 'x', 'filter');
    const { bias } = inputs;
    const convAttrs = attrs as unknown as FusedConv2DAttrs;
    const fn = activationFunction(convAttrs.activation, convAttrs.leakyreluAlpha);
    const info = requireFloat32(x, filter, bias) ?? convGeometry(x.shape, filter.shape, convAttrs);
    if (info instanceof Unsupported) return info;
    if (fn instanceof Unsupported) return fn;
    const biasProblem = checkBias(bias, info.outChannels);
    if (biasProblem !== undefined) return biasProblem;

    const out = storage.allocate(info.outShape);
    const rows = info.batchSize * info.outHeight * info.outWidth;
    const outView = storage.view(out);
    if (bias !== undefined) {
      fillRowsWithBias(outView, rows, info.outChannels, storage.view(bias), sizeOf(bias.shape));
    }
    convolve(info, gemm, loops, storage.view(x), storage.view(filter), outView, bias !== undefined);
    if (fn !== undefined) applyInPlace(outView, rows * info.outChannels, fn);
    return out;
  },
};

export const conv2DBackpropFilterKernel: BlasKernel = {
  name: 'Conv2DBackpropFilter',
  run({ inputs, attrs, storage, gemm, loops }) {
    const { x, dy } = required(inputs, 'x', 'dy');
    const convAttrs = attrs as unknown as Conv2DBackpropFilterAttrs;
    const info = requireFloat32(x, dy) ?? convGeometry(x.shape, convAttrs.filterShape, convAttrs);
    if (info instanceof Unsupported) return info;
    const dW = storage.allocate(info.filterShape);
    const [xView, dyView, dWView] = [storage.view(x), storage.view(dy), storage.view(dW)];
    const width = patchWidth(info);
    const cout = info.outChannels;
    // Each chunk adds its share; zeroing first also gives an empty batch its zero gradient.
    dWView.array.fill(0, dWView.offset, dWView.offset + width * cout);
    const plan = patchPlan(info);
    for (const chunk of chunks(info)) {
      const patches = scratchOf(chunk.rows * width);
      loops.im2col(plan, chunk.images, xView.array, xView.offset + chunk.image * plan.inputPerImage, patches);
      gemm({
        transA: true,
        transB: false,
        m: width,
        n: cout,
        k: chunk.rows,
        a: matrix({ array: patches, offset: 0 }, width),
        b: matrix(dyView, cout, chunk.firstRow * cout),
        c: matrix(dWView, cout),
        beta: 1,
      });
    }
    return dW;
  },
};

export const conv2DBackpropInputKernel: BlasKernel = {
  name: 'Conv2DBackpropInput',
  run({ inputs, attrs, storage, gemm, loops }) {
    const { dy, filter } = required(inputs, 'dy', 'filter');
    const convAttrs = attrs as unknown as Conv2DBackpropInputAttrs;
    const info = requireFloat32(dy, filter) ?? convGeometry(convAttrs.inputShape, filter.shape, convAttrs);
    if (info instanceof Unsupported) return info;
    const dx: TensorInfo = storage.allocate(info.inShape);
    const [dyView, filterView, dxView] = [storage.view(dy), storage.view(filter), storage.view(dx)];
    dxView.array.fill(0, dxView.offset, dxView.offset + sizeOf(info.inShape));
    const width = patchWidth(info);
    const cout = info.outChannels;
    const plan = patchPlan(info);
    for (const chunk of chunks(info)) {
      const patches = scratchOf(chunk.rows * width);
      gemm({
        transA: false,
        transB: true,
        m: chunk.rows,
        n: width,
        k: cout,
        a: matrix(dyView, cout, chunk.firstRow * cout),
        b: matrix(filterView, cout),
        c: matrix({ array: patches, offset: 0 }, width),
      });
      loops.col2imAdd(
        plan,
        chunk.images,
        patches,
        dxView.array,
        dxView.offset + chunk.image * plan.inputPerImage,
      );
    }
    return dx;
  },
};
