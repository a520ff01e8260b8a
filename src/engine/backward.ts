/**
 * A micro-batch's forward and backward, two ways:
 *
 *   one pass    every parameter is a tensor for the whole step (ZeRO 0–2): one gradient call over the net;
 *   block-wise  segments of blocks run forward keeping only their inputs (and the taps the loss reads); the
 *               loss's gradient is taken with respect to the last output and those taps; then each segment,
 *               last first, is run forward again under the tape and its vector-Jacobian product taken with
 *               the gradient that arrived from above. Activation checkpointing is exactly this, and so is
 *               ZeRO-3, whose segment parameters exist only while the segment runs.
 *
 * Both give the same gradients (up to float rounding): dropout masks are a function of the mode's seed and the
 * block's index, so a recomputed block drops the same units.
 */
import * as tf from '@tensorflow/tfjs';
import { type ForwardMode, forwardBlocks, type Net, type NetOutput } from './net.ts';
import type { ParamGroups } from './param-groups.ts';
import type { ZeroStore } from './zero.ts';

/** One micro-batch as the engine runs it. */
export interface MicroBatch {
  readonly x: tf.Tensor;
  readonly mode: ForwardMode;
  /** The student taps the loss reads (`<block>/<tap>`): block-wise execution keeps exactly those. */
  readonly taps: readonly string[];
  /** The mean loss over the micro-batch; runs inside the gradient tape. */
  loss(out: NetOutput, objectiveParams: readonly tf.Tensor[]): tf.Scalar;
  /** Frees what the caller made for this micro-batch (inputs, labels, teacher outputs); called once it has run. */
  dispose(): void;
}

export interface BackwardContext {
  readonly net: Net;
  readonly groups: ParamGroups;
  readonly store: ZeroStore;
  /** The loss is multiplied by this before the backward (dynamic loss scaling); the value returned is not. */
  readonly lossScale: number;
}

type Grads = readonly (tf.Tensor | undefined)[];

/** One gradient call over the whole net; adds every group's gradient to the store. Returns the loss. */
export async function onePass(c: BackwardContext, mb: MicroBatch): Promise<number> {
  const tensors = c.store.allTensors();
  if (!tensors) throw new Error('one-pass backward needs every parameter as a tensor (ZeRO stage ≤ 2)');
  const blocks = c.net.blocks.length;
  const xs = tensors.flat();
  const { value, grads } = tf.engine().gradients(
    () => {
      const out = forwardBlocks(c.net, tensors.slice(0, blocks), mb.x, mb.mode);
      return tf.mul(mb.loss(out, tensors[blocks]), c.lossScale) as tf.Scalar;
    },
    xs,
    undefined,
    true,
  );
  let at = 0;
  for (let g = 0; g < tensors.length; g++) {
    const n = tensors[g].length;
    await addAndDispose(c.store, g, grads.slice(at, at + n));
    at += n;
  }
  return readLoss(value, c.lossScale);
}

/** Block-wise forward and backward over segments of `every` blocks (see the module comment). */
export async function blockwise(c: BackwardContext, mb: MicroBatch, every: number): Promise<number> {
  const { net, store } = c;
  const segments = segmentsOf(net.blocks.length, every);
  const wanted = new Set(mb.taps);
  const inputs: tf.Tensor[] = [];
  const taps: Record<string, tf.Tensor> = {};
  let h = mb.x;
  for (const [s, e] of segments) {
    inputs.push(h);
    const params = await acquire(store, s, e);
    const input = h;
    const out = tf.tidy(() => {
      const o = forwardBlocks(net, params, input, mb.mode, s, e);
      return { y: o.logits, ...pick(o.taps, wanted) };
    });
    release(store, s, params);
    const { y, ...kept } = out;
    Object.assign(taps, kept);
    h = y;
  }

  const objective = c.groups.objective;
  const objParams = await store.acquire(objective);
  const tapNames = Object.keys(taps);
  const logits = h;
  const lossGrad = tf
    .engine()
    .gradients(
      () => tf.mul(mb.loss({ logits, taps }, objParams), c.lossScale) as tf.Scalar,
      [logits, ...tapNames.map((n) => taps[n]), ...objParams],
      undefined,
      true,
    );
  store.release(objective, objParams);
  const dTaps: Record<string, tf.Tensor> = {};
  tapNames.forEach((n, i) => {
    const g = lossGrad.grads[1 + i];
    if (g) dTaps[n] = g;
  });
  await addAndDispose(store, objective, lossGrad.grads.slice(1 + tapNames.length));
  let dy: tf.Tensor = lossGrad.grads[0] ?? tf.zerosLike(logits);

  for (let k = segments.length - 1; k >= 0; k--) {
    const [s, e] = segments[k];
    const params = await acquire(store, s, e);
    const input = inputs[k];
    // Block 0's input is data (token ids for a Transformer): no gradient flows into it.
    const withInput = k > 0;
    const upstream = dy;
    const vjp = tf.engine().gradients(
      () => {
        const o = forwardBlocks(net, params, input, mb.mode, s, e);
        let acc = tf.sum(tf.mul(o.logits, upstream));
        for (const [name, t] of Object.entries(o.taps)) {
          const d = dTaps[name];
          if (d) acc = tf.add(acc, tf.sum(tf.mul(t, d)));
        }
        return acc as tf.Scalar;
      },
      withInput ? [input, ...params.flat()] : params.flat(),
      undefined,
      true,
    );
    vjp.value.dispose();
    release(store, s, params);
    const paramGrads = withInput ? vjp.grads.slice(1) : vjp.grads;
    let at = 0;
    for (let b = s; b < e; b++) {
      const n = net.blocks[b].params.length;
      await addAndDispose(store, b, paramGrads.slice(at, at + n));
      at += n;
    }
    upstream.dispose();
    dy = withInput ? (vjp.grads[0] ?? tf.zerosLike(input)) : tf.scalar(0);
  }
  dy.dispose();
  for (const t of [...inputs.slice(1), logits, ...Object.values(taps), ...Object.values(dTaps)]) t.dispose();
  return readLoss(lossGrad.value, c.lossScale);
}

/** [start, end) block ranges of `every` blocks each (the last may be shorter). */
export function segmentsOf(blocks: number, every: number): [number, number][] {
  if (!Number.isInteger(every) || every < 1) throw new RangeError(`every_n_layers must be ≥ 1, got ${every}`);
  const out: [number, number][] = [];
  for (let s = 0; s < blocks; s += every) out.push([s, Math.min(blocks, s + every)]);
  return out;
}

async function acquire(store: ZeroStore, from: number, to: number): Promise<tf.Tensor[][]> {
  const out: tf.Tensor[][] = [];
  for (let b = from; b < to; b++) out.push(await store.acquire(b));
  return out;
}

function release(store: ZeroStore, from: number, params: readonly tf.Tensor[][]): void {
  params.forEach((p, i) => {
    store.release(from + i, p);
  });
}

function pick(
  taps: Readonly<Record<string, tf.Tensor>>,
  wanted: ReadonlySet<string>,
): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [k, v] of Object.entries(taps)) if (wanted.has(k)) out[k] = v;
  return out;
}

async function addAndDispose(store: ZeroStore, group: number, grads: Grads): Promise<void> {
  await store.addGroupGrads(
    group,
    grads.map((g) => g ?? null),
  );
  for (const g of grads) g?.dispose();
}

function readLoss(value: tf.Scalar, scale: number): number {
  const v = value.dataSync()[0] / scale;
  value.dispose();
  return v;
}
