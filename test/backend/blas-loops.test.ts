/**
 * The loops around the conv and pool GEMMs in C (native/blas.c) against their specification, the JS loops of
 * src/backend/blas/loops.ts: the same bits for im2col, col2im, the max-pool gradient and column sums on strided, padded and
 * odd geometries, offsets into larger arrays, ties, NaN and -Infinity; and the bounds checks that keep a bad run
 * or offset from writing outside its array.
 */
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { patchPlan } from '../../src/backend/blas/conv.ts';
import { jsLoops, type KernelLoops, nativeLoops, type PoolGeometry } from '../../src/backend/blas/loops.ts';
import { binding, NO_BINDING, NO_BINDING_REASON, randomArray } from './helpers.ts';

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** [input h, w, channels, filter h, w, out channels, stride, pad] */
const CONVS: [number, number, number, number, number, number, number, 'same' | 'valid' | number][] = [
  [6, 5, 3, 3, 3, 4, 1, 'same'],
  [7, 7, 2, 3, 3, 2, 2, 'valid'],
  [5, 8, 1, 2, 4, 3, 3, 'same'],
  [9, 4, 5, 5, 1, 2, 2, 1],
  [3, 3, 4, 3, 3, 1, 1, 2],
];
const BATCH = 3;
const OFFSET = 7;

function convInfo([h, w, cin, fh, fw, cout, stride, pad]: (typeof CONVS)[number]) {
  return tf.backend_util.computeConv2DInfo(
    [BATCH, h, w, cin],
    [fh, fw, cin, cout],
    stride,
    1,
    pad,
    undefined,
    false,
    'channelsLast',
  );
}

/** Runs `call` on copies of `arrays` with the JS loops and with the C ones; every array must match bit for bit. */
function same(arrays: Float32Array[], call: (loops: KernelLoops, a: Float32Array[]) => void): void {
  const js = arrays.map((a) => a.slice());
  const c = arrays.map((a) => a.slice());
  call(jsLoops, js);
  call(nativeLoops(binding as NonNullable<typeof binding>), c);
  c.forEach((a, i) => {
    expect(bits(a).equals(bits(js[i])), `array ${i}`).toBe(true);
  });
}

describe.skipIf(NO_BINDING)(
  `the loops around the GEMMs in C equal the JS loops (${NO_BINDING_REASON})`,
  () => {
    it.each(CONVS.map((c) => [c.join(' '), c] as const))('im2col and col2im, %s', (_name, conv) => {
      const info = convInfo(conv);
      const plan = patchPlan(info);
      const inputs = OFFSET + BATCH * plan.inputPerImage + 5;
      const patches = BATCH * plan.patchPerImage;
      // Garbage where the padding goes: im2col must zero it unless the runs cover everything.
      same([randomArray(inputs, 1), randomArray(patches, 2)], (loops, [source, out]) =>
        loops.im2col(plan, BATCH, source, OFFSET, out),
      );
      same([randomArray(patches, 3), randomArray(inputs, 4)], (loops, [p, dest]) =>
        loops.col2imAdd(plan, BATCH, p, dest, OFFSET),
      );
    });

    it.each([
      ['2×2 stride 2', 8, 6, 3, 2, 2, 'valid'],
      ['3×3 stride 2 same', 7, 5, 2, 3, 2, 'same'],
      ['3×3 stride 1 padded', 5, 5, 4, 3, 1, 1],
    ] as const)(
      'maxPoolGrad, %s: ties, NaN and -Infinity windows',
      (_name, h, w, channels, size, stride, pad) => {
        const info = tf.backend_util.computePool2DInfo([BATCH, h, w, channels], size, stride, 1, pad);
        const g: PoolGeometry = {
          ...info,
          channels: info.inChannels,
          padTop: info.padInfo.top,
          padLeft: info.padInfo.left,
        };
        const inSize = BATCH * h * w * channels;
        // Few distinct values, so windows tie; some NaN and -Infinity, and a whole channel of NaN in image 0.
        const x = Float32Array.from({ length: OFFSET + inSize }, (_, i) => {
          if (i >= OFFSET && (i - OFFSET) % channels === 0 && i - OFFSET < h * w * channels)
            return Number.NaN;
          if (i % 13 === 0) return Number.NEGATIVE_INFINITY;
          if (i % 17 === 0) return Number.NaN;
          return (i * 7) % 5;
        });
        const dy = randomArray(OFFSET + BATCH * info.outHeight * info.outWidth * channels, 9);
        same([x, dy, randomArray(OFFSET + inSize + 3, 10)], (loops, [xs, dys, dx]) =>
          loops.maxPoolGrad(g, xs, OFFSET, dys, OFFSET, dx, OFFSET),
        );
      },
    );

    it.each([
      [128, 1024],
      [7, 13],
      [1, 5],
      [0, 3],
    ])('sumColumns, %i rows of %i', (rows, columns) => {
      same(
        [randomArray(OFFSET + rows * columns + 2, 11), randomArray(OFFSET + columns + 3, 12)],
        (loops, [x, out]) => loops.sumColumns(x, OFFSET, rows, columns, out, OFFSET),
      );
    });

    it('refuses a run outside its image or images outside their array, and writes nothing', () => {
      const plan = patchPlan(convInfo(CONVS[0]));
      const source = randomArray(BATCH * plan.inputPerImage, 1);
      const patches = new Float32Array(BATCH * plan.patchPerImage);
      const c = nativeLoops(binding as NonNullable<typeof binding>);
      const bad = { ...plan, runs: plan.runs.slice() };
      bad.runs[bad.runs.length - 1] += 1_000;
      expect(() => c.im2col(bad, BATCH, source, 0, patches)).toThrow(/outside its image/);
      expect(() => c.im2col(plan, BATCH, source, 1, patches)).toThrow(/do not fit/);
      expect(() => c.col2imAdd(plan, BATCH + 1, patches, source, 0)).toThrow(/do not fit/);
      expect(patches.every((v) => v === 0)).toBe(true);
      const g: PoolGeometry = {
        batchSize: 2,
        inHeight: 4,
        inWidth: 4,
        channels: 1,
        outHeight: 2,
        outWidth: 2,
        strideHeight: 2,
        strideWidth: 2,
        filterHeight: 2,
        filterWidth: 2,
        padTop: 0,
        padLeft: 0,
      };
      const dx = new Float32Array(31);
      expect(() => c.maxPoolGrad(g, new Float32Array(32), 0, new Float32Array(8), 0, dx, 0)).toThrow(
        /do not fit/,
      );
    });
  },
);
