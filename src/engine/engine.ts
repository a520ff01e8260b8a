/**
 * One data-parallel training step, in the spirit of Accelerate / DeepSpeed's engine: every micro-batch's
 * gradient is accumulated, averaged over the ranks (all-reduce, or reduce-scatter into shards under ZeRO ≥ 2),
 * clipped by the global norm, and applied by an optimizer to the fp32 parameters this rank owns; the updated
 * parameters are then published to every rank's forward (all-gather under ZeRO 1–2; ZeRO-3 gathers them per
 * block when they are needed). The engine trains a `Net` and the objective's own parameters; it knows nothing of
 * models, data, teachers or objectives beyond that contract.
 */
import { tf } from '../backend/tf.ts';
import type { Collectives, WireDtype } from '../comm/types.ts';
import type { BatchPlan } from '../config/batch.ts';
import { DEFAULT_MAX_REUSE_DISTANCE, type OptimizerSpec } from '../config/schema.ts';
import { Timeline } from '../trace/timeline.ts';
import {
  type BackwardContext,
  blockwise,
  forwardSegment,
  type MicroBatch,
  onePass,
  segmentsOf,
  sumStatistics,
} from './backward.ts';
import { type ClusteringOptions, WeightClusters } from './clustering.ts';
import { createOptimizer } from './create-optimizer.ts';
import type { FlatRange, TensorSlot } from './flat-params.ts';
import type { LossScaler, LossScalerState } from './loss-scaler.ts';
import type { BetasSchedule, LrSchedule } from './lr-schedule.ts';
import {
  type ForwardMode,
  forwardBlocks,
  hasBatchStatistics,
  type Net,
  type NetOutput,
  type ParamSpec,
} from './net.ts';
import type { Optimizer, OptimizerState } from './optimizer.ts';
import { ParamGroups } from './param-groups.ts';
import {
  headGroups,
  MagnitudePruner,
  type PrunedGroups,
  prunableSlots,
  type SparsitySchedule,
  sparsityAt,
  unitGroups,
} from './pruning.ts';
import { stepKernels } from './step-kernels.ts';
import { type MemoryReport, type ZeroStage, ZeroStore, zero3KeepsGathered } from './zero.ts';

export type { MicroBatch } from './backward.ts';

/** Prefix of the loss scaler's counters among the optimizer state's scalars in a snapshot. */
const SCALER_PREFIX = 'loss_scaler.';

export interface EngineOptions {
  net: Net;
  /** Seeds the net's initial parameters (`net.init(seed)`): the same on every rank. */
  seed: number;
  /** The objective's trainable parameters (distillation's projections) and their initial values. */
  objectiveParams?: { specs: readonly ParamSpec[]; initial: readonly Float32Array[] };
  optimizer: OptimizerSpec;
  lrSchedule: LrSchedule;
  /** Betas set by the schedule (OneCycle's momentum cycling); the optimizer's own when absent. */
  betasSchedule?: BetasSchedule;
  /** The data-parallel group. */
  pg: Collectives;
  batch: BatchPlan;
  /** Clip the averaged gradient to this global L2 norm; 0 turns clipping off. */
  gradientClipping?: number;
  /** Wire dtype of the gradient all-reduce. */
  commDtype?: WireDtype;
  zeroStage?: ZeroStage;
  /** ZeRO-3's `stage3_max_reuse_distance` (`zero3KeepsGathered`); DeepSpeed's default when absent. */
  maxReuseDistance?: number;
  /** Recompute activations in backward, keeping only the inputs of every n-th block. */
  activationCheckpointing?: { everyNLayers: number };
  /**
   * The group whose ranks together hold every gradient element once per data-parallel replica set: the global
   * norm (and the step's loss) are summed over it. Default `pg`; a pipeline passes the world (all its stages).
   */
  normGroup?: Collectives;
  /** Ranks that contribute a loss to the step's mean (default: every rank of `pg`; a pipeline: its last stage's). */
  lossRanks?: number;
  /**
   * fp16 / bf16: gradients and gathered parameters travel in half precision (accumulated in fp32), and with fp16
   * a loss scaler keeps small gradients from underflowing: steps whose gradient overflowed on any rank are skipped.
   */
  halfPrecision?: { dtype: 'fp16' | 'bf16'; scaler?: LossScaler };
  /** Records the step's spans (forward+backward per micro-batch, gradient reduction, optimizer, parameters). */
  timeline?: Timeline;
  /** Weight sharing of the net's weight matrices and kernels (src/engine/clustering.ts). */
  clustering?: ClusteringOptions;
  /** Magnitude pruning of the net's weight matrices and kernels, on this schedule (src/engine/pruning.ts). */
  pruning?: SparsitySchedule;
}

export interface StepStats {
  /** Optimizer steps taken so far, this one included. */
  step: number;
  /** Mean loss over every rank's micro-batches of this step. */
  loss: number;
  lr: number;
  /** Global L2 norm of the averaged gradient, before clipping. */
  gradNorm: number;
  /** Wall time of the whole step on this rank, in ms. */
  stepMs: number;
  /** Of which waiting in gradient and parameter collectives after the backward, in ms. */
  commMs: number;
  /** fp16: the loss scale this step's backward used (1 without a scaler). */
  lossScale: number;
  /** True when the gradient overflowed on some rank and every rank skipped the update. */
  skipped: boolean;
  /** fp16: steps skipped so far. */
  skippedSteps: number;
}

/** What a checkpoint of one rank holds. The arrays are live views: write them out before the next step. */
export interface EngineSnapshot {
  step: number;
  range: FlatRange;
  params: Float32Array;
  optimizer: { type: string; state: OptimizerState };
}

export class Engine {
  readonly groups: ParamGroups;
  readonly optimizer: Optimizer;
  readonly zeroStage: ZeroStage;
  readonly #o: EngineOptions;
  readonly #store: ZeroStore;
  readonly #trace: Timeline;
  /**
   * The buffer elements (`ParamSpec.buffer`) this rank owns, by block index: for each, which of the block's buffers,
   * its slot, and the owned part [from, to) of the flat space.
   */
  readonly #buffers: ReadonlyMap<number, readonly OwnedBuffer[]>;
  /** This step's training micro-batches' summed statistics, in the order they ran. */
  #statistics: { block: number; summed: Float32Array }[] = [];
  readonly #pruner: MagnitudePruner | undefined;
  readonly #clusters: WeightClusters | undefined;
  #step = 0;
  #stepStart = 0;

  constructor(o: EngineOptions) {
    if (o.batch.dataParallel !== o.pg.size) {
      throw new Error(
        `the batch plan is for ${o.batch.dataParallel} data-parallel ranks, the group has ${o.pg.size}`,
      );
    }
    this.#o = o;
    this.#trace = o.timeline ?? Timeline.disabled;
    this.zeroStage = o.zeroStage ?? 0;
    this.groups = new ParamGroups(o.net, o.objectiveParams?.specs ?? []);
    const initial = concat(
      [...o.net.init(o.seed), ...(o.objectiveParams?.initial ?? [])],
      this.groups.length,
    );
    if (o.clustering) {
      this.#clusters = new WeightClusters(prunableSlots(o.net, this.groups), o.clustering);
      // Every rank clusters the same initial values: the same clusters everywhere, before the first forward.
      this.#clusters.cluster(initial);
    }
    this.#store = new ZeroStore({
      stage: this.zeroStage,
      pg: o.pg,
      // Half precision sets the wire of every gradient and parameter collective; commDtype only the gradients'.
      dtype: o.halfPrecision?.dtype ?? o.commDtype ?? 'fp32',
      paramDtype: o.halfPrecision?.dtype ?? 'fp32',
      groups: this.groups,
      initial,
    });
    this.#buffers = ownedBuffers(o.net, this.groups, this.#store.ownedRange);
    if (o.pruning) {
      const { structure } = o.pruning;
      const grouped: PrunedGroups | undefined =
        structure === 'units'
          ? { structure, groups: unitGroups(o.net, this.groups) }
          : structure === 'heads'
            ? { structure, groups: headGroups(o.net, this.groups) }
            : undefined;
      const slots = !grouped
        ? prunableSlots(o.net, this.groups)
        : grouped.structure === 'units'
          ? [...new Set(grouped.groups.flatMap((g) => [g.kernel, g.bias, g.next]))]
          : grouped.groups.flatMap((g) => g.slots);
      if (slots.length === 0) {
        const what = {
          weights: 'weight matrix or kernel',
          units: 'hidden dense layer or conv',
          heads: 'attention heads',
        };
        throw new Error(`pruning: the ${o.net.kind} has no ${what[structure]} to prune`);
      }
      this.#pruner = new MagnitudePruner(
        [...slots].sort((a, b) => a.offset - b.offset),
        this.#store.ownedRange,
        grouped,
      );
    }
    this.optimizer = createOptimizer(
      o.optimizer,
      { slots: this.groups.slots, range: this.#store.ownedRange },
      o.pg,
    );
  }

  /** Optimizer steps taken so far. */
  get globalStep(): number {
    return this.#step;
  }

  /** Every tensor of the flat space (the net's, then the objective's), in order. */
  get slots(): readonly TensorSlot[] {
    return this.groups.slots;
  }

  /** The flat elements whose parameters and optimizer state this rank owns. */
  get ownedRange(): FlatRange {
    return this.#store.ownedRange;
  }

  get shards() {
    return this.#store.shards;
  }

  async step(microBatch: (micro: number) => Promise<MicroBatch>): Promise<StepStats> {
    this.beginStep();
    const every = this.#o.activationCheckpointing?.everyNLayers;
    const ctx = this.#backwardContext();
    // ZeRO-3 over a model larger than its reuse distance gathers block by block; batch statistics need the
    // network between blocks: both run block-wise.
    const zero3BlockWise =
      this.zeroStage === 3 &&
      !zero3KeepsGathered(this.groups.length, this.#o.maxReuseDistance ?? DEFAULT_MAX_REUSE_DISTANCE);
    const segment = every ?? (zero3BlockWise ? 1 : this.#o.net.blocks.length);
    const blockWise = zero3BlockWise || every !== undefined || hasBatchStatistics(this.#o.net);
    let lossSum = 0;
    for (let micro = 0; micro < this.#o.batch.accumulation; micro++) {
      const mb = await microBatch(micro);
      const at = { micro, step: this.#step };
      try {
        lossSum += blockWise
          ? await this.#trace.span(
              'forward+backward',
              'backward',
              async () => (await blockwise(ctx, mb.x, mb.mode, { loss: mb }, segment, false)).loss ?? 0,
              at,
            )
          : await this.#trace.span('forward+backward', 'backward', () => onePass(ctx, mb), at);
      } finally {
        mb.dispose();
      }
      await this.#store.endMicroBatch();
    }
    return this.finishStep(lossSum / this.#o.batch.accumulation);
  }

  /** Starts a step driven from outside (a pipeline stage): clears the gradient accumulator and the clock. */
  beginStep(): void {
    this.#store.zeroGrads();
    this.#statistics = [];
    this.#stepStart = performance.now();
  }

  /**
   * Pipeline stages: the whole net forward on `x`, outside the tape (the input is kept by the caller and the
   * forward recomputed in `backwardMicroBatch`, as activation checkpointing does). The caller disposes the result.
   */
  async forwardMicroBatch(x: tf.Tensor, mode: ForwardMode): Promise<tf.Tensor> {
    const ctx = this.#backwardContext();
    let h = x;
    // The backward's recomputation moves the buffers: this forward's statistics are not recorded.
    for (const [from, to] of segmentsOf(this.#o.net, this.#o.net.blocks.length)) {
      const summed = await sumStatistics(ctx, h, mode, from, false);
      const { y } = await forwardSegment(ctx, h, mode, from, to, new Set(), undefined, summed);
      summed?.dispose();
      if (h !== x) h.dispose();
      h = y;
    }
    return h;
  }

  /**
   * Pipeline stages: one micro-batch's backward from the stage's input `x`. `upstream` is the gradient of the
   * stage's output (from the next stage), or, on the last stage, the micro-batch whose loss starts the backward.
   * The forward is recomputed under the tape from `x`, in segments of `activationCheckpointing.everyNLayers`
   * blocks when set (the whole stage otherwise). Adds this micro-batch's parameter gradients; returns the input's
   * gradient (when `inputGrad`) and the loss (last stage). Call `endMicroBatch` after each.
   */
  async backwardMicroBatch(
    x: tf.Tensor,
    mode: ForwardMode,
    upstream: tf.Tensor | MicroBatch,
    inputGrad: boolean,
  ): Promise<{ dx?: tf.Tensor; loss?: number }> {
    const every = this.#o.activationCheckpointing?.everyNLayers ?? this.#o.net.blocks.length;
    const top = upstream instanceof tf.Tensor ? { dy: upstream } : { loss: upstream };
    return blockwise(this.#backwardContext(), x, mode, top, Math.max(1, every), inputGrad);
  }

  /** After each micro-batch driven from outside: ZeRO-2 reduce-scatters its gradient. */
  async endMicroBatch(): Promise<void> {
    await this.#store.endMicroBatch();
  }

  /**
   * Ends a step: averages the gradient over the ranks, clips it by the global norm, applies the optimizer to the
   * owned parameters and publishes them. `loss` is this rank's mean micro-batch loss (0 on pipeline stages that
   * compute none: `lossRanks` says how many ranks contribute one).
   */
  async finishStep(loss: number): Promise<StepStats> {
    const { pg, batch, lrSchedule, betasSchedule, gradientClipping = 0 } = this.#o;
    const store = this.#store;
    const scaler = this.#o.halfPrecision?.scaler;
    const lossScale = scaler?.scale ?? 1;
    const trace = this.#trace;
    const at = { step: this.#step };
    // Time in this step's collectives (the passes between them are compute).
    let commMs = 0;
    const waiting = async (collective: () => Promise<unknown>): Promise<void> => {
      const t0 = performance.now();
      await collective();
      commMs += performance.now() - t0;
    };
    await waiting(() => trace.span('reduce gradients', 'allreduce', () => store.reduceGrads(), at));
    const grads = store.ownedGrads();
    this.#pruner?.apply(grads);
    if (this.#clusters) {
      const sums = this.#clusters.gradientSums(grads, this.ownedRange);
      await waiting(() => pg.allReduce(sums, { op: 'sum', dtype: 'fp32' }));
      this.#clusters.shareGradients(grads, this.ownedRange, sums);
    }
    // Each micro-batch loss is a mean over its samples (the mean over the global batch divides by their count),
    // and the backward ran on the scaled loss: both undone in the pass that also sums the squared norm and looks
    // for inf/NaN. One small all-reduce then carries the step's loss, the squared norm from each rank's shard
    // and whether any rank's gradient overflowed (an inf or NaN anywhere skips the step everywhere).
    const [normSq, overflowHere] = this.#gradStats(
      grads,
      1 / (batch.accumulation * lossScale),
      scaler !== undefined,
    );
    const sums = new Float32Array([loss, normSq, overflowHere]);
    await waiting(() =>
      trace.span(
        'loss, norm, overflow',
        'allreduce',
        () => (this.#o.normGroup ?? pg).allReduce(sums, { op: 'sum', dtype: 'fp32' }),
        at,
      ),
    );
    const overflow = sums[2] > 0;
    scaler?.update(overflow);
    const gradNorm = Math.sqrt(sums[1]);
    const lr = lrSchedule(this.#step);
    if (!overflow) {
      const coef = gradientClipping > 0 ? gradientClipping / (gradNorm + 1e-6) : 1;
      await trace.span(
        this.optimizer.type,
        'optimizer',
        () =>
          this.#keepingBuffers(() =>
            this.optimizer.step(
              store.ownedParams(),
              grads,
              lr,
              betasSchedule?.(this.#step),
              Math.min(coef, 1),
            ),
          ),
        at,
      );
      this.#pruner?.apply(store.ownedParams());
      this.#moveBuffers();
      await waiting(() => trace.span('publish parameters', 'allgather', () => store.publishParams(), at));
    }
    await this.#prune();
    this.#step++;
    return {
      step: this.#step,
      loss: sums[0] / (this.#o.lossRanks ?? pg.size),
      lr,
      gradNorm: overflow ? Number.NaN : gradNorm,
      stepMs: performance.now() - this.#stepStart,
      commMs,
      lossScale,
      skipped: overflow,
      skippedSteps: scaler?.skippedSteps ?? 0,
    };
  }

  /**
   * On a step of the pruning schedule (an overflowing fp16 step too: the masks depend on the weights only), the
   * masks are recomputed from the whole parameters (gathered at ZeRO-3) and the newly pruned weights published.
   */
  async #prune(): Promise<void> {
    const sparsity = this.#o.pruning && sparsityAt(this.#o.pruning, this.#step);
    if (!this.#pruner || sparsity === undefined) return;
    const full = await this.#store.gatherAll();
    this.#pruner.update(full, sparsity);
    this.#pruner.apply(this.#store.ownedParams());
    await this.#store.publishParams();
  }

  #backwardContext(): BackwardContext {
    const lossScale = this.#o.halfPrecision?.scaler?.scale ?? 1;
    return {
      net: this.#o.net,
      groups: this.groups,
      store: this.#store,
      lossScale,
      pg: this.#o.pg,
      onStatistics: (block, summed) => this.#statistics.push({ block, summed }),
    };
  }

  /** Runs the optimizer's `update` with the owned buffers put back as they were: no optimizer moves a buffer. */
  async #keepingBuffers(update: () => void | Promise<void>): Promise<void> {
    const base = this.ownedRange.start;
    const owned = [...this.#buffers.values()].flat();
    const kept = owned.map(({ from, to }) => this.#store.ownedParams().slice(from - base, to - base));
    await update();
    // Taken again: the parameters may live in the wasm heap, whose views an await can outlive.
    const params = this.#store.ownedParams();
    owned.forEach(({ from }, k) => {
      params.set(kept[k], from - base);
    });
  }

  /**
   * The step's training micro-batches, in order, move the owned buffers toward their statistics' targets (as one
   * process moves them batch after batch). A skipped step moves none: its parameters are not published either.
   */
  #moveBuffers(): void {
    const params = this.#store.ownedParams();
    const base = this.ownedRange.start;
    for (const { block, summed } of this.#statistics) {
      const statistics = this.#o.net.blocks[block].statistics;
      const owned = this.#buffers.get(block);
      if (!statistics || !owned) continue;
      const targets = statistics.targets(summed);
      const m = statistics.momentum;
      for (const { buffer, slot, from, to } of owned) {
        for (let i = from; i < to; i++) {
          params[i - base] = params[i - base] * m + targets[buffer][i - slot.offset] * (1 - m);
        }
      }
    }
  }

  /**
   * Scales the owned gradient by `scale`, then [Σ g² over the elements of this rank's ZeRO shard (float64),
   * 1 if `checkFinite` and some owned element is inf or NaN]. Every stage counts each element on exactly one rank
   * (stage 0 holds the whole averaged gradient everywhere, so each rank counts its shard's part of it), and the
   * all-reduce of these partial sums is the global squared norm.
   */
  #gradStats(grads: Float32Array, scale: number, checkFinite: boolean): [number, number] {
    const own = this.#store.ownedRange;
    const part = this.#store.shards.ownedParams(this.#o.pg.rank);
    return stepKernels().gradStats(grads, scale, part.start - own.start, part.end - own.start, checkFinite);
  }

  /**
   * Runs `fn` with every block's parameters as tensors (and the objective's last): for evaluation and export.
   * Collective at ZeRO-3 (every rank must call it), where it gathers the whole model once.
   */
  async withParams<T>(fn: (params: readonly (readonly tf.Tensor[])[]) => T): Promise<T> {
    const held = this.#store.allTensors();
    if (held) return fn(held);
    const values = await this.#store.gatherAll();
    const params = this.groups.groups.map((g) =>
      g.slots.map((s) => tf.tensor(values.slice(s.offset, s.offset + s.size), [...s.shape])),
    );
    try {
      return fn(params);
    } finally {
      for (const t of params.flat()) t.dispose();
    }
  }

  /** Every parameter's value in flat order (collective at ZeRO-3). */
  async fullParams(): Promise<Float32Array> {
    return this.#store.gatherAll();
  }

  /** Inference on `x` with `params` from `withParams`. */
  forward(params: readonly (readonly tf.Tensor[])[], x: tf.Tensor, mode?: ForwardMode): NetOutput {
    return forwardBlocks(this.#o.net, params, x, mode ?? { training: false, seed: 0 });
  }

  /** Bytes this rank holds for parameters, gradients and optimizer state, measured from its buffers. */
  memory(): MemoryReport {
    const state = this.optimizer.state();
    let optimizerBytes = 0;
    for (const v of Object.values(state)) if (v instanceof Float32Array) optimizerBytes += v.byteLength;
    return this.#store.memory(optimizerBytes);
  }

  snapshot(): EngineSnapshot {
    return {
      step: this.#step,
      range: this.ownedRange,
      params: this.#store.ownedParams(),
      optimizer: { type: this.optimizer.type, state: { ...this.optimizer.state(), ...this.#scalerState() } },
    };
  }

  /**
   * fp16: the loss scaler's counters ride with the optimizer's (same on every rank, like its step count), so a
   * resumed run continues the same sequence of scales.
   */
  #scalerState(): Record<string, number> {
    const scaler = this.#o.halfPrecision?.scaler;
    if (!scaler) return {};
    return Object.fromEntries(Object.entries(scaler.state()).map(([k, v]) => [`${SCALER_PREFIX}${k}`, v]));
  }

  /**
   * Continues from full (consolidated) parameters and optimizer state: this rank takes its own range of them,
   * whatever world size and stage wrote them.
   */
  async restore(s: {
    step: number;
    params: Float32Array;
    optimizer: { type: string; state: OptimizerState };
  }): Promise<void> {
    if (s.params.length !== this.groups.length) {
      throw new Error(
        `the checkpoint holds ${s.params.length} parameters; the job's model has ${this.groups.length}`,
      );
    }
    if (s.optimizer.type !== this.optimizer.type) {
      throw new Error(
        `the checkpoint's optimizer is ${s.optimizer.type}; the job's is ${this.optimizer.type}`,
      );
    }
    const { start, end } = this.ownedRange;
    const state: OptimizerState = {};
    const scaler: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.optimizer.state)) {
      if (k.startsWith(SCALER_PREFIX) && typeof v === 'number') scaler[k.slice(SCALER_PREFIX.length)] = v;
      else state[k] = v instanceof Float32Array ? v.subarray(start, end) : v;
    }
    this.optimizer.loadState(state);
    // A checkpoint from an fp32 run has no scaler state: the scaler starts afresh.
    if (this.#o.halfPrecision?.scaler && Object.keys(scaler).length > 0) {
      this.#o.halfPrecision.scaler.loadState(scaler as unknown as LossScalerState);
    }
    await this.#store.loadOwned(s.params.subarray(start, end));
    // The masks of a run pruned before its checkpoint: its pruned weights are the zeros.
    if (this.#pruner && this.#o.pruning && s.step > this.#o.pruning.beginStep)
      this.#pruner.restoreFrom(this.#store.ownedParams());
    this.#clusters?.restore(s.params);
    this.#step = s.step;
  }

  dispose(): void {
    this.#store.dispose();
  }
}

/** Part of a block's buffer that a rank owns: the buffer's index among the block's buffers, its slot, [from, to). */
interface OwnedBuffer {
  readonly buffer: number;
  readonly slot: TensorSlot;
  readonly from: number;
  readonly to: number;
}

/** The buffer elements within `owned`, by block (blocks with none left out). */
function ownedBuffers(net: Net, groups: ParamGroups, owned: FlatRange): Map<number, OwnedBuffer[]> {
  const out = new Map<number, OwnedBuffer[]>();
  net.blocks.forEach((b, i) => {
    const slots = groups.groups[i].slots.filter((_, k) => b.params[k].buffer === true);
    const parts = slots.flatMap((slot, buffer) => {
      const from = Math.max(owned.start, slot.offset);
      const to = Math.min(owned.end, slot.offset + slot.size);
      return from < to ? [{ buffer, slot, from, to }] : [];
    });
    if (parts.length > 0) out.set(i, parts);
  });
  return out;
}

function concat(parts: readonly Float32Array[], length: number): Float32Array {
  const out = new Float32Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  if (at !== length) throw new Error(`initial values: ${at} for ${length} parameters`);
  return out;
}
