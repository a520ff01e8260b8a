/**
 * Where parameters and gradients live at each ZeRO stage, and how they move (DeepSpeed's meaning):
 *
 *   stage 0  every rank holds all parameters, all gradients and all optimizer state; gradients all-reduced
 *   stage 1  optimizer state partitioned: gradients all-reduced, each rank updates its shard, params all-gathered
 *   stage 2  gradients partitioned too: each micro-batch's gradient is reduce-scattered into a shard accumulator
 *   stage 3  parameters partitioned too: each rank keeps only its shard; a group's parameters are all-gathered
 *            just before it runs and released after, and its gradient is reduce-scattered as soon as it exists
 *
 * The optimizer always sees the same thing: this rank's owned parameters and their gradient, as flat views.
 */
import * as tf from '@tensorflow/tfjs';
import type { Collectives, WireDtype } from '../comm/types.ts';
import type { FlatRange } from './flat-params.ts';
import type { ParamGroups } from './param-groups.ts';
import { Partition } from './partition.ts';

export type ZeroStage = 0 | 1 | 2 | 3;

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
  readonly partition: Partition;
  readonly #pg: Collectives;
  readonly #groups: ParamGroups;
  readonly #dtype: WireDtype;
  readonly #paramDtype: WireDtype;
  /** Stages 0–2: all parameters (padded). Stage 3: this rank's shard. */
  readonly #params: Float32Array;
  /** Stages 0–1: the whole (padded) gradient. Stages 2–3: this rank's shard. */
  readonly #grads: Float32Array;
  /** Stages 0–2: every group's parameters as tensors, rebuilt after each update. */
  #tensors: tf.Tensor[][] | undefined;
  /** Stage 2: the current micro-batch's whole gradient, reduce-scattered and dropped when the micro-batch ends. */
  #micro: Float32Array | undefined;
  #gatheredBytes = 0;
  #gatheredPeak = 0;

  constructor(o: ZeroStoreOptions) {
    this.stage = o.stage;
    this.#pg = o.pg;
    this.#groups = o.groups;
    this.#dtype = o.dtype;
    this.#paramDtype = o.paramDtype;
    this.partition = new Partition(o.groups.length, o.pg.size);
    if (o.initial.length !== o.groups.length) {
      throw new Error(`initial parameters: ${o.initial.length} values for ${o.groups.length} parameters`);
    }
    const { paddedLength, shardLength } = this.partition;
    if (o.stage === 3) {
      const mine = this.partition.ownedParams(o.pg.rank);
      this.#params = new Float32Array(shardLength);
      this.#params.set(o.initial.subarray(mine.start, mine.end));
    } else {
      this.#params = new Float32Array(paddedLength);
      this.#params.set(o.initial);
      this.#tensors = this.#makeTensors();
    }
    this.#grads = new Float32Array(o.stage >= 2 ? shardLength : paddedLength);
  }

  /** The real parameters whose update this rank computes: all at stage 0, its shard's otherwise. */
  get ownedRange(): FlatRange {
    return this.stage === 0
      ? { start: 0, end: this.partition.length }
      : this.partition.ownedParams(this.#pg.rank);
  }

  /** The owned parameters, as a live view the optimizer updates in place. */
  ownedParams(): Float32Array {
    return this.#view(this.#params, this.stage === 3);
  }

  /** The owned parameters' gradient (reduced over the ranks once `reduceGrads` has run), as a live view. */
  ownedGrads(): Float32Array {
    return this.#view(this.#grads, this.stage >= 2);
  }

  #view(buf: Float32Array, isShard: boolean): Float32Array {
    const { start, end } = this.ownedRange;
    const base = isShard ? this.partition.shard(this.#pg.rank).start : 0;
    return buf.subarray(start - base, end - base);
  }

  /** Stages 0–2: every group's parameter tensors (for a one-pass backward over the whole net). */
  allTensors(): readonly (readonly tf.Tensor[])[] | undefined {
    return this.#tensors;
  }

  /** A group's parameters as tensors: held ones at stages 0–2; gathered from every rank's shard at stage 3. */
  async acquire(group: number): Promise<tf.Tensor[]> {
    if (this.#tensors) return this.#tensors[group];
    const g = this.#groups.groups[group];
    const values = await this.#gather(g.range);
    const tensors = g.slots.map((s) =>
      tf.tensor(values.subarray(s.offset - g.range.start, s.offset - g.range.start + s.size), [...s.shape]),
    );
    this.#gatheredBytes += values.byteLength;
    this.#gatheredPeak = Math.max(this.#gatheredPeak, this.#gatheredBytes);
    return tensors;
  }

  /** Stage 3: frees what `acquire` gathered. A no-op at other stages. */
  release(group: number, tensors: readonly tf.Tensor[]): void {
    if (this.#tensors) return;
    for (const t of tensors) t.dispose();
    const { range } = this.#groups.groups[group];
    this.#gatheredBytes -= (range.end - range.start) * Float32Array.BYTES_PER_ELEMENT;
  }

  zeroGrads(): void {
    this.#grads.fill(0);
  }

  /**
   * Adds one micro-batch's gradient of a group (one tensor or null per slot; null: the loss does not use it).
   * Stage 3 reduce-scatters it at once into this rank's shard.
   */
  async addGroupGrads(group: number, grads: readonly (tf.Tensor | null)[]): Promise<void> {
    const g = this.#groups.groups[group];
    if (this.stage === 3) {
      const flat = new Float32Array(g.range.end - g.range.start);
      addInto(flat, g.range.start, g, grads);
      const mine = await this.#reduceScatterRange(flat, g.range);
      const shard = this.partition.shard(this.#pg.rank);
      const from = Math.max(g.range.start, shard.start) - shard.start;
      for (let i = 0; i < mine.length; i++) this.#grads[from + i] += mine[i];
      return;
    }
    if (this.stage === 2) {
      this.#micro ??= new Float32Array(this.partition.paddedLength);
      addInto(this.#micro, 0, g, grads);
      return;
    }
    addInto(this.#grads, 0, g, grads);
  }

  /** Stage 2: the micro-batch's gradient is complete: reduce-scatter it into the shard accumulator. */
  async endMicroBatch(): Promise<void> {
    if (this.stage !== 2 || !this.#micro) return;
    const micro = this.#micro;
    this.#micro = undefined;
    const mine = await this.#pg.reduceScatter(micro, { op: 'avg', dtype: this.#dtype });
    for (let i = 0; i < mine.length; i++) this.#grads[i] += mine[i];
  }

  /** Stages 0–1: averages the accumulated gradient over the ranks (stages 2–3 did it per micro-batch). */
  async reduceGrads(): Promise<void> {
    if (this.stage <= 1) await this.#pg.allReduce(this.#grads, { op: 'avg', dtype: this.#dtype });
  }

  /** After the optimizer updated the owned parameters: every rank's forward sees the new values. */
  async publishParams(): Promise<void> {
    if (this.stage === 3) return;
    if (this.stage >= 1) {
      const shard = this.partition.shard(this.#pg.rank);
      const all = await this.#pg.allGather(this.#params.subarray(shard.start, shard.end), {
        dtype: this.#paramDtype,
      });
      this.#params.set(all);
    }
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = this.#makeTensors();
  }

  /** Every real parameter, in flat order. Collective at stage 3 (every rank must call it). */
  async gatherAll(): Promise<Float32Array> {
    if (this.stage !== 3) return this.#params.slice(0, this.partition.length);
    return this.#gather({ start: 0, end: this.partition.length });
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

  memory(optimizerBytes: number): MemoryReport {
    const tensorBytes = this.#tensors ? this.partition.length * Float32Array.BYTES_PER_ELEMENT : 0;
    return {
      params: this.#params.byteLength + tensorBytes,
      grads: this.#grads.byteLength,
      optimizer: optimizerBytes,
      gatheredPeak: this.#gatheredPeak,
    };
  }

  dispose(): void {
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = undefined;
  }

  #makeTensors(): tf.Tensor[][] {
    // Copies: the cpu backend keeps the array it is given, and `#params` changes at the next update.
    return this.#groups.groups.map((g) =>
      g.slots.map((s) => tf.tensor(this.#params.slice(s.offset, s.offset + s.size), [...s.shape])),
    );
  }

  /** Stage 3: the values of [range) from the shards that hold them (each rank sends its overlap). */
  async #gather(range: FlatRange): Promise<Float32Array> {
    const counts = this.partition.countsOf(range);
    const shard = this.partition.shard(this.#pg.rank);
    const from = Math.max(range.start, shard.start) - shard.start;
    const piece = this.#params.subarray(from, from + counts[this.#pg.rank]);
    return this.#pg.allGather(piece, { counts, dtype: this.#paramDtype });
  }

  /** Stage 3: the rank-average of `flat` (the gradient of [range)), returning this rank's overlap of it. */
  async #reduceScatterRange(flat: Float32Array, range: FlatRange): Promise<Float32Array> {
    const counts = this.partition.countsOf(range);
    return this.#pg.reduceScatter(flat, { op: 'avg', counts, dtype: this.#dtype });
  }
}

/** Adds a group's gradient tensors into `buf`, whose element 0 is flat element `base`. */
function addInto(
  buf: Float32Array,
  base: number,
  group: { slots: readonly { name: string; offset: number; size: number }[] },
  grads: readonly (tf.Tensor | null)[],
): void {
  group.slots.forEach((slot, i) => {
    const g = grads[i];
    if (!g) return;
    const values = g.dataSync() as Float32Array;
    if (values.length !== slot.size) {
      throw new Error(`gradient of ${slot.name} has ${values.length} values, expected ${slot.size}`);
    }
    const at = slot.offset - base;
    for (let j = 0; j < values.length; j++) buf[at + j] += values[j];
  });
}
