/**
 * A micro-batch's forward and backward, two ways:
 *
 *   one pass    every parameter is a tensor for the whole micro-batch (held at ZeRO 0–2, gathered at ZeRO-3 when
 *               the model fits its reuse distance): one gradient call over the net;
 *   block-wise  segments of blocks run forward keeping only their inputs (and the taps the loss reads); the
 *               loss's gradient is taken with respect to the last output and those taps; then each segment,
 *               last first, is run forward again under the tape and its vector-Jacobian product taken with
 *               the gradient that arrived from above. Activation checkpointing is exactly this, and so is
 *               ZeRO-3, whose segment parameters exist only while the segment runs.
 *
 * Both give the same gradients (up to float rounding): dropout masks are a function of the mode's seed and the
 * block's index, so a recomputed block drops the same units.
 *
 * A net with batch-statistics blocks (BatchNormalization) trains block-wise only, with a segment starting at each
 * such block: before its forward the block's local statistics are summed over the data-parallel ranks, and in its
 * backward the gradient of that sum is summed too and carried back through the local statistics into the
 * segment's input gradient. Both collectives sit between segments, where the step may wait for the network.
 */
import { tf } from '../backend/tf.ts';
import type { Collectives } from '../comm/types.ts';
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
  /** The data-parallel group, over which batch statistics are summed. */
  readonly pg: Collectives;
  /** Receives each training micro-batch's summed statistics of block `block`, once per micro-batch. */
  readonly onStatistics: (block: number, summed: Float32Array) => void;
}

type Grads = readonly (tf.Tensor | undefined)[];

/**
 * One gradient call over the whole net, every group's parameters acquired for it (ZeRO-3 gathers them all, the
 * gathers in flight together) and released after; adds every group's gradient to the store. Returns the loss.
 */
export async function onePass(c: BackwardContext, mb: MicroBatch): Promise<number> {
  const tensors = await acquire(c.store, 0, c.groups.groups.length);
  const blocks = c.net.blocks.length;
  const xs = tensors.flat();
  let result: { value: tf.Scalar; grads: tf.Tensor[] };
  try {
    result = tf.engine().gradients(
      () => {
        const out = forwardBlocks(c.net, tensors.slice(0, blocks), mb.x, mb.mode);
        return tf.mul(mb.loss(out, tensors[blocks]), c.lossScale) as tf.Scalar;
      },
      xs,
      undefined,
      true,
    );
  } finally {
    release(c.store, 0, tensors);
  }
  const { value, grads } = result;
  let at = 0;
  for (let g = 0; g < tensors.length; g++) {
    const n = tensors[g].length;
    await addAndDispose(c.store, g, grads.slice(at, at + n));
    at += n;
  }
  return readLoss(value, c.lossScale);
}

/**
 * Where a block-wise backward starts: the micro-batch's loss (the whole net, or a pipeline's last stage), or the
 * gradient of the output that the next pipeline stage sent back (the caller keeps ownership of `dy`).
 */
export type BackwardTop = { readonly loss: MicroBatch } | { readonly dy: tf.Tensor };

/**
 * Block-wise forward and backward of `x` over segments of `every` blocks (see the module comment). The next
 * segment's parameters are requested before the current one computes (at ZeRO-3 its all-gather is in flight
 * meanwhile). Returns the loss (from a loss top) and, with `inputGrad`, the gradient of `x`.
 */
export async function blockwise(
  c: BackwardContext,
  x: tf.Tensor,
  mode: ForwardMode,
  top: BackwardTop,
  every: number,
  inputGrad: boolean,
): Promise<{ loss?: number; dx?: tf.Tensor }> {
  const segments = segmentsOf(c.net, every);
  const wanted = new Set('loss' in top ? top.loss.taps : []);
  const inputs: tf.Tensor[] = [];
  // Each segment's summed statistics (of its first block), computed once and reused by its recomputation.
  const summed: (tf.Tensor | undefined)[] = [];
  const taps: Record<string, tf.Tensor> = {};
  let h = x;
  // From a gradient, the last segment's output is not needed: its forward runs once, under the tape.
  const forwardSegments = 'loss' in top ? segments.length : segments.length - 1;
  let next = acquire(c.store, ...segments[0]);
  for (let k = 0; k < forwardSegments; k++) {
    const [s, e] = segments[k];
    const params = await next;
    if (k + 1 < segments.length) next = acquire(c.store, ...segments[k + 1]);
    inputs.push(h);
    summed[k] = await sumStatistics(c, h, mode, s, true);
    const out = await forwardSegment(c, h, mode, s, e, wanted, params, summed[k]);
    Object.assign(taps, out.taps);
    h = out.y;
  }
  if (forwardSegments < segments.length) inputs.push(h);
  let loss: number | undefined;
  let upstream: tf.Tensor;
  let dTaps: Record<string, tf.Tensor> = {};
  if ('loss' in top) {
    ({ loss, dy: upstream, dTaps } = await lossBackward(c, top.loss, h, taps));
    h.dispose();
    next = acquire(c.store, ...segments[segments.length - 1]);
  } else upstream = top.dy;
  const callers = 'dy' in top ? top.dy : undefined;
  for (let k = segments.length - 1; k >= 0; k--) {
    const [s, e] = segments[k];
    const params = await next;
    if (k > 0) next = acquire(c.store, ...segments[k - 1]);
    // Block 0's input is data (token ids for a Transformer): no gradient flows into it unless the caller asks.
    const wantDx = k > 0 || inputGrad;
    if (k >= forwardSegments) summed[k] = await sumStatistics(c, inputs[k], mode, s, true);
    const dx = await backwardSegment(c, inputs[k], mode, s, e, upstream, dTaps, wantDx, params, summed[k]);
    if (upstream !== callers) upstream.dispose();
    upstream = dx ?? tf.scalar(0);
  }
  for (const t of [...inputs.slice(1), ...Object.values(taps), ...Object.values(dTaps)]) t.dispose();
  tf.dispose(summed.filter((t) => t !== undefined));
  if (inputGrad) return { loss, dx: upstream };
  upstream.dispose();
  return { loss };
}

/**
 * Block `index`'s local statistics of its input `x` summed over the data-parallel ranks, when the block has
 * statistics and `mode` trains (undefined otherwise); `record` hands them to `onStatistics` (the one forward per
 * micro-batch whose statistics move the buffers).
 */
export async function sumStatistics(
  c: BackwardContext,
  x: tf.Tensor,
  mode: ForwardMode,
  index: number,
  record: boolean,
): Promise<tf.Tensor | undefined> {
  const statistics = c.net.blocks[index].statistics;
  if (!statistics || !mode.training) return undefined;
  const local = tf.tidy(() => statistics.local(x));
  const sum = (await local.data()) as Float32Array;
  const shape = local.shape;
  local.dispose();
  await c.pg.allReduce(sum, { op: 'sum', dtype: 'fp32' });
  if (record) c.onStatistics(index, sum);
  return tf.tensor(sum, shape);
}

/**
 * Blocks [from, to) forward, outside any tape: their output and the taps in `wanted`. Parameters are acquired for
 * the segment (unless `acquired` already holds them) and released after (ZeRO-3 gathers and frees them).
 * `summed`: the first block's summed statistics (`sumStatistics`).
 */
export async function forwardSegment(
  c: BackwardContext,
  x: tf.Tensor,
  mode: ForwardMode,
  from: number,
  to: number,
  wanted: ReadonlySet<string>,
  acquired?: tf.Tensor[][],
  summed?: tf.Tensor,
): Promise<{ y: tf.Tensor; taps: Record<string, tf.Tensor> }> {
  const params = acquired ?? (await acquire(c.store, from, to));
  const out = tf.tidy(() => {
    const o = forwardBlocks(c.net, params, x, mode, from, to, statisticsOf(from, summed));
    return { y: o.logits, ...pick(o.taps, wanted) };
  });
  release(c.store, from, params);
  const { y, ...taps } = out;
  return { y, taps };
}

/**
 * The loss of the net's output `logits` (and the kept `taps`) and its gradient with respect to both, adding the
 * objective's parameter gradients to the store. The loss is scaled by `lossScale` for the backward only.
 */
export async function lossBackward(
  c: BackwardContext,
  mb: MicroBatch,
  logits: tf.Tensor,
  taps: Readonly<Record<string, tf.Tensor>>,
): Promise<{ loss: number; dy: tf.Tensor; dTaps: Record<string, tf.Tensor> }> {
  const objective = c.groups.objective;
  const objParams = await c.store.acquire(objective);
  const tapNames = Object.keys(taps);
  const r = tf
    .engine()
    .gradients(
      () => tf.mul(mb.loss({ logits, taps }, objParams), c.lossScale) as tf.Scalar,
      [logits, ...tapNames.map((n) => taps[n]), ...objParams],
      undefined,
      true,
    );
  c.store.release(objective, objParams);
  const dTaps: Record<string, tf.Tensor> = {};
  tapNames.forEach((n, i) => {
    const g = r.grads[1 + i];
    if (g) dTaps[n] = g;
  });
  await addAndDispose(c.store, objective, r.grads.slice(1 + tapNames.length));
  return { loss: readLoss(r.value, c.lossScale), dy: r.grads[0] ?? tf.zerosLike(logits), dTaps };
}

/**
 * Blocks [from, to) run again under the tape from their input `x`, and their vector-Jacobian product taken with
 * `dy` (the gradient of their output) and `dTaps` (of their taps, by full name): adds the blocks' parameter
 * gradients to the store and returns the gradient of `x` when `inputGrad`. With `summed` (the first block's
 * summed statistics) the gradient of the sum, summed over the ranks, flows into `x` through the local statistics.
 */
export async function backwardSegment(
  c: BackwardContext,
  x: tf.Tensor,
  mode: ForwardMode,
  from: number,
  to: number,
  dy: tf.Tensor,
  dTaps: Readonly<Record<string, tf.Tensor>>,
  inputGrad: boolean,
  acquired?: tf.Tensor[][],
  summed?: tf.Tensor,
): Promise<tf.Tensor | undefined> {
  const params = acquired ?? (await acquire(c.store, from, to));
  const throughSum = summed !== undefined && inputGrad;
  const vjp = tf.engine().gradients(
    () => {
      const o = forwardBlocks(c.net, params, x, mode, from, to, statisticsOf(from, summed));
      let acc = tf.sum(tf.mul(o.logits, dy));
      for (const [name, t] of Object.entries(o.taps)) {
        const d = dTaps[name];
        if (d) acc = tf.add(acc, tf.sum(tf.mul(t, d)));
      }
      return acc as tf.Scalar;
    },
    [...(inputGrad ? [x] : []), ...params.flat(), ...(throughSum ? [summed] : [])],
    undefined,
    true,
  );
  vjp.value.dispose();
  release(c.store, from, params);
  const first = inputGrad ? 1 : 0;
  let at = first;
  for (let b = from; b < to; b++) {
    const n = c.net.blocks[b].params.length;
    await addAndDispose(c.store, b, vjp.grads.slice(at, at + n));
    at += n;
  }
  if (!inputGrad) return undefined;
  const dx = vjp.grads[0] ?? tf.zerosLike(x);
  if (!throughSum) return dx;
  const dSum = vjp.grads[at] ?? tf.zerosLike(summed);
  const total = (await dSum.data()) as Float32Array;
  dSum.dispose();
  await c.pg.allReduce(total, { op: 'sum', dtype: 'fp32' });
  const statistics = c.net.blocks[from].statistics;
  if (!statistics) throw new Error(`block ${c.net.blocks[from].name} has no statistics`);
  const both = tf.tidy(() => {
    const dTotal = tf.tensor(total, summed.shape);
    const through = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(statistics.local(input), dTotal)))(x);
    return tf.add(dx, through);
  });
  dx.dispose();
  return both;
}

function statisticsOf(block: number, summed: tf.Tensor | undefined): Map<number, tf.Tensor> | undefined {
  return summed === undefined ? undefined : new Map([[block, summed]]);
}

/**
 * [start, end) block ranges of `every` blocks each (the last may be shorter), with a range starting at every
 * batch-statistics block as well (see the module comment).
 */
export function segmentsOf(net: Pick<Net, 'blocks'>, every: number): [number, number][] {
  if (!Number.isInteger(every) || every < 1) throw new RangeError(`every_n_layers must be ≥ 1, got ${every}`);
  const out: [number, number][] = [];
  let start = 0;
  net.blocks.forEach((b, i) => {
    if (i > start && (i - start === every || b.statistics !== undefined)) {
      out.push([start, i]);
      start = i;
    }
  });
  if (net.blocks.length > 0) out.push([start, net.blocks.length]);
  return out;
}

/** Every block's parameters of [from, to), requested together (ZeRO-3: their all-gathers run concurrently). */
function acquire(store: ZeroStore, from: number, to: number): Promise<tf.Tensor[][]> {
  return Promise.all(Array.from({ length: to - from }, (_, i) => store.acquire(from + i)));
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
