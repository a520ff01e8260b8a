/**
 * Integer quantization, simulated in float (fake quantization) and stored as integers.
 *
 *   weights      symmetric: s = max|w| / qmax over the tensor or each output channel (the last axis),
 *                q = clamp(round(w / s), −qmax, qmax), w' = q · s, qmax = 2^(bits−1) − 1
 *   activations  8-bit affine over a calibrated range [lo, hi] widened to hold 0 (ONNX QuantizeLinear):
 *                s = (hi − lo) / 255, z = round(−lo / s), x' = (clamp(round(x / s) + z, 0, 255) − z) · s
 *
 * Rounding is half to even (tf.round, ONNX) and every operation float32, so the arrays written to disk, the
 * tensors of the forward and an ONNX runtime agree to the bit. In training the gradient passes through both
 * unchanged (the straight-through estimator).
 */
import { tf } from '../backend/tf.ts';
import type { Block, Net } from './net.ts';
import { kthSmallest } from './pruning.ts';

/** How the weights are quantized. */
export interface WeightQuantization {
  readonly bits: 4 | 8;
  readonly perChannel: boolean;
}

/** The largest integer of a symmetric `bits`-bit weight: 127 for 8 bits, 7 for 4. */
export function qmaxOf(bits: number): number {
  return 2 ** (bits - 1) - 1;
}

/** x rounded to the nearest integer, ties to even (as tf.round and ONNX round). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Whether a parameter is quantized: a weight matrix or kernel (rank ≥ 2), not a buffer (as pruning). */
export function isQuantizedParam(p: {
  readonly shape: readonly number[];
  readonly buffer?: boolean;
}): boolean {
  return p.shape.length >= 2 && p.buffer !== true;
}

/** The scales of a weight tensor: one per output channel (its last axis) or one; a zero range has scale 1. */
export function weightScales(
  values: Float32Array,
  shape: readonly number[],
  q: WeightQuantization,
): Float32Array {
  const channels = q.perChannel ? shape[shape.length - 1] : 1;
  const maxAbs = new Float32Array(channels);
  for (let i = 0; i < values.length; i++) {
    const c = i % channels;
    const a = Math.abs(values[i]);
    if (a > maxAbs[c]) maxAbs[c] = a;
  }
  const qmax = qmaxOf(q.bits);
  return maxAbs.map((m) => (m === 0 ? 1 : Math.fround(m / qmax)));
}

/** A weight tensor as integers and their scales. */
export interface QuantizedWeights {
  readonly ints: Int8Array;
  readonly scales: Float32Array;
}

export function quantizeWeights(
  values: Float32Array,
  shape: readonly number[],
  q: WeightQuantization,
): QuantizedWeights {
  const scales = weightScales(values, shape, q);
  const qmax = qmaxOf(q.bits);
  const ints = new Int8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const r = roundHalfEven(Math.fround(values[i] / scales[i % scales.length]));
    ints[i] = Math.max(-qmax, Math.min(qmax, r));
  }
  return { ints, scales };
}

/** The float values integers `ints` with `scales` stand for (one scale, or one per channel of the last axis). */
export function dequantizeWeights({ ints, scales }: QuantizedWeights): Float32Array {
  const out = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) out[i] = ints[i] * scales[i % scales.length];
  return out;
}

/**
 * `values` (one array per parameter of `net`, `netParams` order) with every weight matrix and kernel replaced by
 * its quantized value: what the fake-quantized forward computes with.
 */
export function onWeightGrid(
  net: Net,
  values: readonly Float32Array[],
  q: WeightQuantization,
): Float32Array[] {
  const params = net.blocks.flatMap((b) => b.params);
  return values.map((v, i) =>
    isQuantizedParam(params[i]) ? dequantizeWeights(quantizeWeights(v, params[i].shape, q)) : v,
  );
}

/** An 8-bit affine activation quantizer (ONNX's uint8 scale and zero point). */
export interface AffineQuantization {
  readonly scale: number;
  readonly zeroPoint: number;
}

/** The 8-bit affine quantizer of range [lo, hi], widened to hold 0 so that 0 is exact. */
export function affineOf(lo: number, hi: number): AffineQuantization {
  const min = Math.min(lo, 0);
  const max = Math.max(hi, 0);
  const scale = max > min ? Math.fround((max - min) / 255) : 1;
  return { scale, zeroPoint: Math.max(0, Math.min(255, roundHalfEven(Math.fround(-min / scale)))) };
}

/** The identity in the backward: `f` in the forward, the gradient passed through unchanged. */
function straightThrough(f: (x: tf.Tensor) => tf.Tensor): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((x) => ({ value: f(x as tf.Tensor), gradFunc: (dy: tf.Tensor) => dy })) as (
    x: tf.Tensor,
  ) => tf.Tensor;
}

/** `w` fake-quantized as `quantizeWeights` then `dequantizeWeights` would, with a straight-through gradient. */
export function fakeQuantWeights(w: tf.Tensor, q: WeightQuantization): tf.Tensor {
  const qmax = qmaxOf(q.bits);
  return straightThrough((x) =>
    tf.tidy(() => {
      const axes = q.perChannel ? x.shape.map((_, i) => i).slice(0, -1) : undefined;
      const maxAbs = tf.max(tf.abs(x), axes);
      const scale = tf.where(tf.equal(maxAbs, 0), tf.onesLike(maxAbs), tf.div(maxAbs, qmax));
      return tf.mul(tf.clipByValue(tf.round(tf.div(x, scale)), -qmax, qmax), scale);
    }),
  )(w);
}

/** `x` through an 8-bit affine quantizer and back, with a straight-through gradient. */
export function fakeQuantAffine(x: tf.Tensor, { scale, zeroPoint }: AffineQuantization): tf.Tensor {
  return straightThrough((v) =>
    tf.tidy(() =>
      tf.mul(tf.sub(tf.clipByValue(tf.add(tf.round(tf.div(v, scale)), zeroPoint), 0, 255), zeroPoint), scale),
    ),
  )(x);
}

/** How a calibration measures a range: min/max, or each batch's percentiles averaged. */
export type CalibrationMethod =
  | { readonly kind: 'minmax' }
  | { readonly kind: 'percentile'; readonly percentile: number };

/**
 * The activation quantizers of a net's quantized blocks (those with a weight matrix or kernel), one per block
 * input: first observed over calibration batches, then fixed. Before they are fixed the inputs pass unchanged.
 */
export class ActivationQuantizers {
  readonly #method: CalibrationMethod;
  /** Per block: [lo, hi] and the batches that gave them, or undefined for a block not quantized. */
  readonly #observed: ({ lo: number; hi: number; batches: number } | undefined)[];
  #fixed: (AffineQuantization | undefined)[] | undefined;
  #observing = false;

  constructor(quantizedBlocks: readonly boolean[], method: CalibrationMethod) {
    this.#method = method;
    this.#observed = quantizedBlocks.map((q) => (q ? { lo: 0, hi: 0, batches: 0 } : undefined));
  }

  /** Between `observe(true)` and `observe(false)`, every forward's block inputs are measured. */
  observe(on: boolean): void {
    this.#observing = on;
  }

  /** Block `block`'s input as the forward uses it: measured while observing, quantized once fixed. */
  input(block: number, x: tf.Tensor): tf.Tensor {
    if (x.dtype !== 'float32') return x;
    const fixed = this.#fixed?.[block];
    if (fixed) return fakeQuantAffine(x, fixed);
    const seen = this.#observed[block];
    if (this.#observing && seen) this.#measure(seen, x.dataSync() as Float32Array);
    return x;
  }

  #measure(seen: { lo: number; hi: number; batches: number }, v: Float32Array): void {
    let lo: number;
    let hi: number;
    if (this.#method.kind === 'minmax') {
      lo = v.reduce((a, b) => Math.min(a, b), Number.POSITIVE_INFINITY);
      hi = v.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY);
      if (seen.batches > 0) {
        lo = Math.min(lo, seen.lo);
        hi = Math.max(hi, seen.hi);
      }
    } else {
      const at = (p: number) => kthSmallest(v.slice(), Math.floor((p / 100) * (v.length - 1)));
      const n = seen.batches;
      lo = (seen.lo * n + at(100 - this.#method.percentile)) / (n + 1);
      hi = (seen.hi * n + at(this.#method.percentile)) / (n + 1);
    }
    seen.lo = lo;
    seen.hi = hi;
    seen.batches++;
  }

  /** The measured ranges, [lo, hi] per block in order (0, 0 for a block not quantized): what the ranks combine. */
  ranges(): Float32Array {
    return Float32Array.from(this.#observed.flatMap((s) => (s ? [s.lo, s.hi] : [0, 0])));
  }

  /** Fixes the quantizers from ranges (the ranks' combined `ranges()`); from now on every input is quantized. */
  fix(ranges: Float32Array): void {
    this.#fixed = this.#observed.map((s, i) => (s ? affineOf(ranges[2 * i], ranges[2 * i + 1]) : undefined));
  }

  /** The fixed quantizers, per block (undefined: not quantized), or undefined before `fix`. */
  get fixed(): readonly (AffineQuantization | undefined)[] | undefined {
    return this.#fixed;
  }
}

/** Which blocks of `net` are quantized: those with a weight matrix or kernel. */
export function quantizedBlocks(net: Net): boolean[] {
  return net.blocks.map((b) => b.params.some(isQuantizedParam));
}

/**
 * `net` with fake quantization in its forward: each quantized block's weight matrices and kernels through the
 * weight quantizer, its input through `activations`. Parameters, initial values and statistics are `net`'s.
 */
export function fakeQuantizedNet(
  net: Net,
  weights: WeightQuantization,
  activations: ActivationQuantizers,
): Net {
  const blocks = net.blocks.map((block, i): Block => {
    const quantized = block.params.map(isQuantizedParam);
    if (!quantized.some(Boolean)) return block;
    return {
      ...block,
      forward: (w, x, mode, index, summed) =>
        block.forward(
          w.map((t, k) => (quantized[k] ? fakeQuantWeights(t, weights) : t)),
          activations.input(i, x),
          mode,
          index,
          summed,
        ),
    };
  });
  return { ...net, blocks, init: (seed) => net.init(seed) };
}
