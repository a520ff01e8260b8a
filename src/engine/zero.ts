/**
 * Where parameters and gradients live at each ZeRO stage, and how they move (DeepSpeed's meaning):
 *
 *   stage 0  every rank holds all parameters, all gradients and all optimizer state; gradients all-reduced
 *   stage 1  optimizer state sharded: gradients all-reduced, each rank updates its shard, params all-gathered
 *   stage 2  gradients sharded too: each micro-batch's gradient is reduce-scattered into a shard accumulator
 *   stage 3  parameters sharded too: each rank keeps only its shard; a group's parameters are all-gathered
 *            just before it runs and released after, and its gradient is reduce-scattered as soon as it exists
 *
 * The optimizer always sees the same thing: this rank's owned parameters and their gradient, as flat views.
 */
import { tensorOfCurrent } from '../backend/tensor-memory.ts';
import { tf } from '../backend/tf.ts';
import { reduceInto } from '../comm/reduce-op.ts';
import type { Collectives, WireDtype } from '../comm/types.ts';
import { type WireCodec, wireCodec } from '../comm/wire-dtype.ts';
import { FlatGrads } from './flat-grads.ts';
import type { FlatRange } from './flat-params.ts';
import type { ParamGroups } from './param-groups.ts';
import { ZeroShards } from './zero-shards.ts';

export type ZeroStage = 0 | 1 | 2 | 3;

/**
 * ZeRO-3: whether a micro-batch keeps every block it gathered until its backward has used it. DeepSpeed keeps a
 * gathered parameter whose next use is within `stage3_max_reuse_distance` parameters; here the rule is model-wide:
 * a model of at most that many parameters is gathered once per micro-batch and backpropagated in one gradient
 * call, a larger one is gathered block by block for the forward and again for the backward, which recomputes
 * each block's forward (the least memory: the block computing and the next one).
 */
export function zero3KeepsGathered(parameters: number, maxReuseDistance: number): boolean {
  return parameters <= maxReuseDistance;
}

/** Bytes this rank holds, by kind (what `--dry-run` estimates and the summary reports as measured). */
export interface MemoryReport {
  /** Persistent parameters: the flat fp32 copy, plus the tensors the forward reads at stages 0–2. */
  params: number;
  /** The gradient accumulator kept across micro-batches. */
  grads: number;
  optimizer: number;
  /** Stage 3: the most bytes of gathered parameters alive at once (0 at other stages). */
  gatheredPeak: number;
}

export interface ZeroStoreOptions {
  stage: ZeroStage;
  /** The data-parallel group the shards are spread over. */
  pg: Collectives;
  groups: ParamGroups;
  /** Every real parameter's initial value, in flat order (the same on every rank). */
  initial: Float32Array;
  /** Wire dtype of the gradient collectives (accumulated in fp32). */
  dtype: WireDtype;
  /** Wire dtype of the parameter all-gathers (half precision: the forward sees half-rounded weights). */
  paramDtype: WireDtype;
}

export class ZeroStore {
  readonly stage: ZeroStage;
  readonly shards: ZeroShards;
  readonly #pg: Collectives;
  readonly #groups: ParamGroups;
  readonly #dtype: WireDtype;
  readonly #paramDtype: WireDtype;
  /**
   * The fp32 parameters this rank updates: every one (stage 0, and stages 1–2 in fp32, where this copy is also the
   * forward's), or this rank's shard (stage 3, and stages 1–2 in half precision). Element 0 is flat `#masterBase`.
   */
  readonly #master: Float32Array;
  readonly #masterBase: number;
  /** Stages 0–2 in half precision: what the forward reads, kept between steps as fp16/bf16 bytes. */
  readonly #half: { codec: WireCodec; bytes: Uint8Array } | undefined;
  /** Stages 0–1: the whole (padded) gradient. Stages 2–3: this rank's shard. */
  readonly #grads: Float32Array;
  /** Stages 0–1: the micro-batches' gradients summed into `#grads`. */
  readonly #sum: FlatGrads | undefined;
  /**
   * Stages 0–2: every group's parameters as tensors. In fp32 they persist between steps (rebuilt after each
   * update); in half precision they are decoded at the step's first use and freed after the update.
   */
  #tensors: tf.Tensor[][] | undefined;
  /** Stage 2: the current micro-batch's whole gradient, reduce-scattered and dropped when the micro-batch ends. */
  #micro: FlatGrads | undefined;
  #gatheredBytes = 0;
  #gatheredPeak = 0;

  constructor(o: ZeroStoreOptions) {
    this.stage = o.stage;
    this.#pg = o.pg;
    this.#groups = o.groups;
    this.#dtype = o.dtype;
    this.#paramDtype = o.paramDtype;
    this.shards = new ZeroShards(o.groups.length, o.pg.size);
    if (o.initial.length !== o.groups.length) {
      throw new Error(`initial parameters: ${o.initial.length} values for ${o.groups.length} parameters`);
    }
    const { paddedLength, shardLength } = this.shards;
    const half = o.paramDtype !== 'fp32' && o.stage < 3;
    const sharded = o.stage === 3 || (half && o.stage > 0);
    if (sharded) {
      const shard = this.shards.shard(o.pg.rank);
      const mine = this.shards.ownedParams(o.pg.rank);
      this.#master = new Float32Array(shardLength);
      this.#master.set(o.initial.subarray(mine.start, mine.end));
      this.#masterBase = shard.start;
    } else {
      this.#master = new Float32Array(paddedLength);
      this.#master.set(o.initial);
      this.#masterBase = 0;
    }
    if (half) {
      const codec = wireCodec(o.paramDtype);
      const padded = new Float32Array(paddedLength);
      padded.set(o.initial);
      this.#half = { codec, bytes: codec.encode(padded) };
    }
    if (o.stage < 3 && !half) this.#tensors = this.#makeTensors(this.#master);
    this.#grads = new Float32Array(o.stage >= 2 ? shardLength : paddedLength);
    if (o.stage <= 1) this.#sum = new FlatGrads(this.#grads, 0);
  }

  /** The real parameters whose update this rank computes: all at stage 0, its shard's otherwise. */
  get ownedRange(): FlatRange {
    return this.stage === 0 ? { start: 0, end: this.shards.length } : this.shards.ownedParams(this.#pg.rank);
  }

  /** The owned parameters, as a live view the optimizer updates in place. */
  ownedParams(): Float32Array {
    const { start, end } = this.ownedRange;
    return this.#master.subarray(start - this.#masterBase, end - this.#masterBase);
  }

  /** The owned parameters' gradient (reduced over the ranks once `reduceGrads` has run), as a live view. */
  ownedGrads(): Float32Array {
    const { start, end } = this.ownedRange;
    const base = this.stage >= 2 ? this.shards.shard(this.#pg.rank).start : 0;
    return this.#grads.subarray(start - base, end - base);
  }

  /** Stages 0–2: every group's parameter tensors (for a one-pass backward over the whole net). */
  allTensors(): readonly (readonly tf.Tensor[])[] | undefined {
    if (this.stage === 3) return undefined;
    this.#tensors ??= this.#makeTensors(this.#forwardValues());
    return this.#tensors;
  }

  /** A group's parameters as tensors: held ones at stages 0–2; gathered from every rank's shard at stage 3. */
  async acquire(group: number): Promise<tf.Tensor[]> {
    const held = this.allTensors();
    if (held) return held[group] as tf.Tensor[];
    const g = this.#groups.groups[group];
    // Counted from the request: the gather's output buffer exists from then on (a prefetch overlaps the block
    // that is computing).
    this.#gatheredBytes += (g.range.end - g.range.start) * Float32Array.BYTES_PER_ELEMENT;
    this.#gatheredPeak = Math.max(this.#gatheredPeak, this.#gatheredBytes);
    const values = await this.#gather(g.range);
    return g.slots.map((s) =>
      tf.tensor(values.subarray(s.offset - g.range.start, s.offset - g.range.start + s.size), [...s.shape]),
    );
  }

  /** Stage 3: frees what `acquire` gathered. A no-op at other stages. */
  release(group: number, tensors: readonly tf.Tensor[]): void {
    if (this.stage !== 3) return;
    for (const t of tensors) t.dispose();
    const { range } = this.#groups.groups[group];
    this.#gatheredBytes -= (range.end - range.start) * Float32Array.BYTES_PER_ELEMENT;
  }

  zeroGrads(): void {
    if (this.#sum) this.#sum.clear();
    else this.#grads.fill(0);
  }

  /**
   * Adds one micro-batch's gradient of a group (one tensor or null per slot; null: the loss does not use it).
   * Stage 3 reduce-scatters it at once into this rank's shard.
   */
  async addGroupGrads(group: number, grads: readonly (tf.Tensor | null)[]): Promise<void> {
    const g = this.#groups.groups[group];
    if (this.stage === 3) {
      const flat = new FlatGrads(new Float32Array(g.range.end - g.range.start), g.range.start);
      flat.add(g.slots, grads);
      const mine = await this.#reduceScatterRange(flat.values, g.range);
      const shard = this.shards.shard(this.#pg.rank);
      const from = Math.max(g.range.start, shard.start) - shard.start;
      reduceInto('sum', this.#grads.subarray(from, from + mine.length), mine);
      return;
    }
    if (this.stage === 2) {
      this.#micro ??= new FlatGrads(new Float32Array(this.shards.paddedLength), 0);
      this.#micro.add(g.slots, grads);
      return;
    }
    this.#sum?.add(g.slots, grads);
  }

  /** Stage 2: the micro-batch's gradient is complete: reduce-scatter it into the shard accumulator. */
  async endMicroBatch(): Promise<void> {
    if (this.stage !== 2 || !this.#micro) return;
    const micro = this.#micro.values;
    this.#micro = undefined;
    const mine = await this.#pg.reduceScatter(micro, { op: 'avg', dtype: this.#dtype });
    reduceInto('sum', this.#grads.subarray(0, mine.length), mine);
  }

  /** Stages 0–1: averages the accumulated gradient over the ranks (stages 2–3 did it per micro-batch). */
  async reduceGrads(): Promise<void> {
    if (!this.#sum) return;
    this.#sum.settle(this.#groups.slots);
    await this.#pg.allReduce(this.#grads, { op: 'avg', dtype: this.#dtype });
  }

  /** After the optimizer updated the owned parameters: every rank's forward sees the new values. */
  async publishParams(): Promise<void> {
    if (this.stage === 3) return;
    if (this.stage >= 1) {
      const shard = this.shards.shard(this.#pg.rank);
      const mine = this.#master.subarray(shard.start - this.#masterBase, shard.end - this.#masterBase);
      if (this.#half) {
        const all = await this.#pg.allGather(mine, { dtype: this.#paramDtype });
        this.#half.codec.encode(all, this.#half.bytes);
      } else await this.#pg.allGather(mine, { dtype: this.#paramDtype, out: this.#master });
    } else if (this.#half) {
      this.#half.codec.encode(this.#master, this.#half.bytes);
    }
    // New tensors, never the old ones written in place: the wasm backend's own kernels (XNNPACK) pack a weight
    // tensor once and reuse the packed copy while the tensor lives, and would go on computing with old values.
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = this.#half ? undefined : this.#makeTensors(this.#master);
  }

  /** Every real parameter as the forward sees it, in flat order. Collective at stage 3 (every rank must call it). */
  async gatherAll(): Promise<Float32Array> {
    if (this.stage === 3) return this.#gather({ start: 0, end: this.shards.length });
    return this.#forwardValues().slice(0, this.shards.length);
  }

  /** Replaces the owned parameters (a checkpoint's) and republishes them. */
  async loadOwned(values: Float32Array): Promise<void> {
    const own = this.ownedParams();
    if (values.length !== own.length) {
      throw new Error(`loadOwned: ${values.length} values for ${own.length} owned parameters`);
    }
    own.set(values);
    await this.publishParams();
  }

  /** Bytes held between steps (what persists; a half-precision step's decoded tensors do not). */
  memory(optimizerBytes: number): MemoryReport {
    const tensorBytes =
      this.#tensors && !this.#half ? this.shards.length * Float32Array.BYTES_PER_ELEMENT : 0;
    return {
      params: this.#master.byteLength + (this.#half?.bytes.byteLength ?? 0) + tensorBytes,
      grads: this.#grads.byteLength,
      optimizer: optimizerBytes,
      gatheredPeak: this.#gatheredPeak,
    };
  }

  dispose(): void {
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = undefined;
  }

  /** Stages 0–2: every parameter (padded) as the forward reads it: the fp32 copy, or the half bytes decoded. */
  #forwardValues(): Float32Array {
    if (!this.#half) return this.#master;
    const out = new Float32Array(this.shards.paddedLength);
    this.#half.codec.decodeInto(this.#half.bytes, out);
    return out;
  }

  #makeTensors(values: Float32Array): tf.Tensor[][] {
    return this.#groups.groups.map((g) =>
      g.slots.map((s) => tensorOfCurrent(values.subarray(s.offset, s.offset + s.size), s.shape)),
    );
  }

  /** Stage 3: the values of [range) from the shards that hold them (each rank sends its overlap). */
  async #gather(range: FlatRange): Promise<Float32Array> {
    const counts = this.shards.countsOf(range);
    const shard = this.shards.shard(this.#pg.rank);
    const from = Math.max(range.start, shard.start) - this.#masterBase;
    const piece = this.#master.subarray(from, from + counts[this.#pg.rank]);
    return this.#pg.allGather(piece, { counts, dtype: this.#paramDtype });
  }

  /** Stage 3: the rank-average of `flat` (the gradient of [range)), returning this rank's overlap of it. */
  async #reduceScatterRange(flat: Float32Array, range: FlatRange): Promise<Float32Array> {
    const counts = this.shards.countsOf(range);
    return this.#pg.reduceScatter(flat, { op: 'avg', counts, dtype: this.#dtype });
  }
}
