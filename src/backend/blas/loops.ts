/**
 * The data movement around the conv and pool kernels' GEMMs: im2col, its adjoint (col2im, adding), the
 * max-pool gradient, and a bias's gradient (column sums). These JS loops are the specification; native/blas.c holds their twins (the same copies and
 * the same fp32 adds in the same order: the same bits), which the kernels use when the OpenBLAS binding is
 * loaded. In JS these loops took three times the GEMMs' time of a CNN step (im2col 9.3 ms, col2im 6.8 ms, the
 * pool gradient 7.4 ms against 7.7 ms of GEMMs, per MNIST CNN step at micro-batch 32).
 */
import type { BlasBinding } from './native.ts';

/**
 * Where the input under every output pixel of a convolution lies, for one image: runs of [patch offset, input
 * offset, length] (from the image's first patch row and first input element); what no run covers is padding.
 */
export interface PatchPlan {
  runs: Int32Array;
  /** Whether the runs cover the whole patch matrix (no padding to zero). */
  complete: boolean;
  patchPerImage: number;
  inputPerImage: number;
}

/** A max pool's geometry (NHWC), as tfjs' Pool2DInfo gives it. */
export interface PoolGeometry {
  batchSize: number;
  inHeight: number;
  inWidth: number;
  channels: number;
  outHeight: number;
  outWidth: number;
  strideHeight: number;
  strideWidth: number;
  filterHeight: number;
  filterWidth: number;
  padTop: number;
  padLeft: number;
}

export interface KernelLoops {
  /** `images` images' input windows (from `source[sourceOffset]` on) copied into their rows of `patches`. */
  im2col(
    plan: PatchPlan,
    images: number,
    source: Float32Array,
    sourceOffset: number,
    patches: Float32Array,
  ): void;
  /** The adjoint of im2col: each patch element added onto the input element (from `dest[destOffset]`) it came from. */
  col2imAdd(
    plan: PatchPlan,
    images: number,
    patches: Float32Array,
    dest: Float32Array,
    destOffset: number,
  ): void;
  /**
   * dx (written whole) = each window's gradient on its maximum, the first in row-major order on ties; a window of
   * NaN or -Infinity only has none (as in the stock kernels).
   */
  maxPoolGrad(
    g: PoolGeometry,
    x: Float32Array,
    xOffset: number,
    dy: Float32Array,
    dyOffset: number,
    dx: Float32Array,
    dxOffset: number,
  ): void;
  /** out[j] (from `out[outOffset]`) = the sum of column j of `rows` rows of `columns` values, in fp32, row after row. */
  sumColumns(
    x: Float32Array,
    xOffset: number,
    rows: number,
    columns: number,
    out: Float32Array,
    outOffset: number,
  ): void;
}

/** Runs of at least this many elements are copied with TypedArray.set (measured: faster from about 32). */
const LONG_RUN = 32;

export const jsLoops: KernelLoops = {
  im2col(plan, images, source, sourceOffset, patches) {
    const { runs, patchPerImage, inputPerImage } = plan;
    if (!plan.complete) patches.fill(0, 0, images * patchPerImage);
    for (let image = 0; image < images; image++) {
      const patchBase = image * patchPerImage;
      const inputBase = sourceOffset + image * inputPerImage;
      for (let r = 0; r < runs.length; r += 3) {
        const [to, from, length] = [patchBase + runs[r], inputBase + runs[r + 1], runs[r + 2]];
        // set() copies at memcpy speed but costs a subarray object: worth it from a few dozen elements on.
        if (length >= LONG_RUN) patches.set(source.subarray(from, from + length), to);
        else for (let i = 0; i < length; i++) patches[to + i] = source[from + i];
      }
    }
  },

  col2imAdd(plan, images, patches, dest, destOffset) {
    const { runs, patchPerImage, inputPerImage } = plan;
    for (let image = 0; image < images; image++) {
      const patchBase = image * patchPerImage;
      const targetBase = destOffset + image * inputPerImage;
      for (let r = 0; r < runs.length; r += 3) {
        const from = patchBase + runs[r];
        const to = targetBase + runs[r + 1];
        for (let i = 0; i < runs[r + 2]; i++) dest[to + i] += patches[from + i];
      }
    }
  },

  maxPoolGrad(g, x, xOffset, dy, dyOffset, dx, dxOffset) {
    const { batchSize, inHeight, inWidth, channels, outHeight, outWidth } = g;
    const { strideHeight, strideWidth, filterHeight, filterWidth, padTop, padLeft } = g;
    dx.fill(0, dxOffset, dxOffset + batchSize * inHeight * inWidth * channels);
    // Per channel: the window's largest value so far and where it is. Walking the window row by row with the
    // channels innermost reads the input contiguously (NHWC).
    const best = new Float32Array(channels);
    const bestAt = new Int32Array(channels);
    let dyIndex = dyOffset;
    for (let b = 0; b < batchSize; b++) {
      for (let oy = 0; oy < outHeight; oy++) {
        const y0 = oy * strideHeight - padTop;
        const yMin = Math.max(0, y0);
        const yMax = Math.min(inHeight, y0 + filterHeight);
        for (let ox = 0; ox < outWidth; ox++) {
          const x0 = ox * strideWidth - padLeft;
          const xMin = Math.max(0, x0);
          const xMax = Math.min(inWidth, x0 + filterWidth);
          best.fill(Number.NEGATIVE_INFINITY);
          bestAt.fill(-1);
          for (let y = yMin; y < yMax; y++) {
            for (let xi = xMin; xi < xMax; xi++) {
              const at = ((b * inHeight + y) * inWidth + xi) * channels;
              for (let c = 0; c < channels; c++) {
                const value = x[xOffset + at + c];
                if (value > best[c]) {
                  best[c] = value;
                  bestAt[c] = at + c;
                }
              }
            }
          }
          for (let c = 0; c < channels; c++, dyIndex++) {
            if (bestAt[c] >= 0) dx[dxOffset + bestAt[c]] += dy[dyIndex];
          }
        }
      }
    }
  },

  sumColumns(x, xOffset, rows, columns, out, outOffset) {
    out.fill(0, outOffset, outOffset + columns);
    for (let r = 0; r < rows; r++) {
      const row = xOffset + r * columns;
      for (let j = 0; j < columns; j++) out[outOffset + j] += x[row + j];
    }
  },
};

/** The loops in C, through the OpenBLAS binding. */
export function nativeLoops(binding: BlasBinding): KernelLoops {
  return {
    im2col(plan, images, source, sourceOffset, patches) {
      const { runs, patchPerImage, inputPerImage, complete } = plan;
      binding.im2col(runs, images, patchPerImage, inputPerImage, complete, source, sourceOffset, patches);
    },
    col2imAdd(plan, images, patches, dest, destOffset) {
      const { runs, patchPerImage, inputPerImage } = plan;
      binding.col2imAdd(runs, images, patchPerImage, inputPerImage, patches, dest, destOffset);
    },
    maxPoolGrad(g, x, xOffset, dy, dyOffset, dx, dxOffset) {
      binding.maxPoolGrad(
        x,
        xOffset,
        dy,
        dyOffset,
        dx,
        dxOffset,
        g.batchSize,
        g.inHeight,
        g.inWidth,
        g.channels,
        g.outHeight,
        g.outWidth,
        g.strideHeight,
        g.strideWidth,
        g.filterHeight,
        g.filterWidth,
        g.padTop,
        g.padLeft,
      );
    },
    sumColumns: (x, xOffset, rows, columns, out, outOffset) =>
      binding.sumColumns(x, xOffset, rows, columns, out, outOffset),
  };
}
