/**
 * Where parameters and gradients live at each ZeRO stage, and how they move (DeepSpeed's meaning):
 *
 *   stage 0  every rank holds all parameters, all gradients and all optimizer state; gradients all-reduced
 *   stage 1  optimizer state sharded: gradients reduce-scattered once per step (a rank updates only its shard, so
 *            it needs only its shard's average), each rank updates its shard, params all-gathered
 *   stage 2  gradients sharded too: each micro-batch's gradient is reduce-scattered into a shard accumulator
 *   stage 3  parameters sharded too: each rank keeps only its shard; a group's parameters are all-gathered
 *            just before it runs and released after, and its gradient is reduce-scattered as soon as it exists
 *
 * The optimizer always sees the same thing: this rank's owned parameters and their gradient, as flat views.
 */
import { type ResidentFloats, residentFloats } from '../backend/resident.ts';
import { tensorOfCurrent } from '../backend/tensor-memory.ts';
import type { tf } from '../backend/tf.ts';
import { reduceInto } from '../comm/reduce-op.ts';
import type { Collectives, WireDtype } from '../comm/types.ts';
import { type WireCodec, wireCodec } from '../comm/wire-dtype.ts';
import { FlatGrads } from './flat-grads.ts';
import type { FlatRange } from './flat-params.ts';
import type { ParamGroups } from './param-groups.ts';
import { ZeroShards } from './zero-shards.ts';

export type ZeroStage = 0 | 1 | 2 | 3;

/** Stage 2's one part of the shard accumulator (stage 3's parts are its groups, by index). */
const WHOLE_SHARD = 'shard';

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
   * The fp32 parameters this rank updates: every one (stages 0–2 in fp32), or this rank's shard (stage 3, and
   * stages 1–2 in half precision). Element 0 is flat `#masterBase`. At stages 0–2 in fp32 they are `#forward`'s
   * memory, which the optimizer updates (and stages 1–2 all-gather into) where the next step's tensors will look:
   * take them again after any await (`ResidentFloats.values`).
   */
  readonly #master: () => Float32Array;
  readonly #masterBase: number;
  /**
   * Stages 0–2 in fp32: every (padded) parameter as the forward reads it, in memory the tensors are views of (the
   * wasm heap).
   */
  readonly #forward: ResidentFloats | undefined;
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
  /** Stages 2–3: the parts of `#grads` a reduction wrote this step: the whole shard, or a group's overlap of it. */
  readonly #reduced = new Set<number | typeof WHOLE_SHARD>();
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
    if (o.stage < 3 && !half) {
      const forward = residentFloats(paddedLength);
      forward.values().set(o.initial);
      this.#forward = forward;
    }
    if (sharded) {
      const shard = this.shards.shard(o.pg.rank);
      const mine = this.shards.ownedParams(o.pg.rank);
      const master = new Float32Array(shardLength);
      master.set(o.initial.subarray(mine.start, mine.end));
      this.#master = () => master;
      this.#masterBase = shard.start;
    } else if (this.#forward) {
      const forward = this.#forward;
      this.#master = () => forward.values();
      this.#masterBase = 0;
    } else {
      // Stage 0 in half precision: the fp32 master, whose rounding the forward's half bytes hold.
      const master = new Float32Array(paddedLength);
      master.set(o.initial);
      this.#master = () => master;
      this.#masterBase = 0;
    }
    if (half) {
      const codec = wireCodec(o.paramDtype);
      const padded = new Float32Array(paddedLength);
      padded.set(o.initial);
      this.#half = { codec, bytes: codec.encode(padded) };
    }
    if (this.#forward) this.#tensors = this.#forwardTensors(this.#forward);
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
    return this.#master().subarray(start - this.#masterBase, end - this.#masterBase);
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
    this.#tensors ??= this.#forward ? this.#forwardTensors(this.#forward) : this.#halfTensors();
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
    // Gathered where its tensors will look (the wasm heap: no copy into them); freed when the last of them goes.
    const block = residentFloats(g.range.end - g.range.start);
    try {
      await this.#gather(g.range, () => block.values());
      return g.slots.map((s) => block.tensor(s.offset - g.range.start, s.shape));
    } finally {
      block.dispose();
    }
  }

  /** Stage 3: frees what `acquire` gathered. A no-op at other stages. */
  release(group: number, tensors: readonly tf.Tensor[]): void {
    if (this.stage !== 3) return;
    for (const t of tensors) t.dispose();
    const { range } = this.#groups.groups[group];
    this.#gatheredBytes -= (range.end - range.start) * Float32Array.BYTES_PER_ELEMENT;
  }

  zeroGrads(): void {
    this.#sum?.clear();
    this.#reduced.clear();
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
      const counts = this.shards.countsOf(g.range);
      const from = this.#shardOffset(g.range.start);
      await this.#reduceInto(group, this.#grads.subarray(from, from + counts[this.#pg.rank]), (out) =>
        this.#pg.reduceScatter(flat.values, { op: 'avg', counts, dtype: this.#dtype, out }),
      );
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
    await this.#reduceInto(WHOLE_SHARD, this.#grads, (out) =>
      this.#pg.reduceScatter(micro, { op: 'avg', dtype: this.#dtype, out }),
    );
  }

  /**
   * Stage 0: averages the accumulated gradient over the ranks (all-reduce); stage 1: this rank's shard of it, in
   * place (the rest of the buffer keeps this rank's own sums, which nothing reads). Stages 2–3 did it per
   * micro-batch: what no reduction reached this step is zeroed.
   */
  async reduceGrads(): Promise<void> {
    if (this.stage === 2 && !this.#reduced.has(WHOLE_SHARD)) this.#grads.fill(0);
    if (this.stage === 3) {
      this.#groups.groups.forEach((g, group) => {
        if (this.#reduced.has(group)) return;
        const from = this.#shardOffset(g.range.start);
        this.#grads.fill(0, from, from + this.shards.countsOf(g.range)[this.#pg.rank]);
      });
    }
    if (!this.#sum) return;
    this.#sum.settle(this.#groups.slots);
    const options = { op: 'avg', dtype: this.#dtype } as const;
    if (this.stage === 0) await this.#pg.allReduce(this.#grads, options);
    else {
      const shard = this.shards.shard(this.#pg.rank);
      const out = this.#grads.subarray(shard.start, shard.end);
      await this.#pg.reduceScatter(this.#grads, { ...options, out });
    }
  }

  /**
   * Stages 2–3: a reduction (`reduce`, writing its result to the `out` it is given) summed into `part` of the
   * shard accumulator. The step's first into a part writes there directly: no zero-fill, no add.
   */
  async #reduceInto(
    key: number | typeof WHOLE_SHARD,
    part: Float32Array,
    reduce: (out: Float32Array) => Promise<Float32Array>,
  ): Promise<void> {
    if (!this.#reduced.has(key)) {
      this.#reduced.add(key);
      await reduce(part);
      return;
    }
    reduceInto('sum', part, await reduce(new Float32Array(part.length)));
  }

  /** Stage 3: where flat element `at` (or the first of this rank's shard after it) is in the shard accumulator. */
  #shardOffset(at: number): number {
    const shard = this.shards.shard(this.#pg.rank);
    return Math.max(at, shard.start) - shard.start;
  }

  /** After the optimizer updated the owned parameters: every rank's forward sees the new values. */
  async publishParams(): Promise<void> {
    if (this.stage === 3) return;
    if (this.stage >= 1) {
      const shard = this.shards.shard(this.#pg.rank);
      const master = this.#master();
      const mine = master.subarray(shard.start - this.#masterBase, shard.end - this.#masterBase);
      if (this.#half) {
        const all = await this.#pg.allGather(mine, { dtype: this.#paramDtype });
        this.#half.codec.encode(all, this.#half.bytes);
      } else {
        // Written where the heap is at each write: it may grow (and move) while the collective waits.
        await this.#pg.allGather(mine, { dtype: this.#paramDtype, out: this.#master });
      }
    } else if (this.#half) {
      this.#half.codec.encode(this.#master(), this.#half.bytes);
    }
    // New tensors, never the old ones written in place: the wasm backend's own kernels (XNNPACK) pack a weight
    // tensor once and reuse the packed copy while the tensor lives, and would go on computing with old values.
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = this.#forward ? this.#forwardTensors(this.#forward) : undefined;
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
    const f32 = Float32Array.BYTES_PER_ELEMENT;
    const forward = this.#forward;
    // The master is the forward's memory; on backends that copy it into tensors, those copies count too.
    const forwardBytes = forward?.copies ? this.shards.length * f32 : 0;
    return {
      params: this.#master().byteLength + (this.#half?.bytes.byteLength ?? 0) + forwardBytes,
      grads: this.#grads.byteLength,
      optimizer: optimizerBytes,
      gatheredPeak: this.#gatheredPeak,
    };
  }

  dispose(): void {
    for (const t of this.#tensors?.flat() ?? []) t.dispose();
    this.#tensors = undefined;
    this.#forward?.dispose();
  }

  /** Stages 0–2: every parameter (padded) as the forward reads it: the fp32 copy, or the half bytes decoded. */
  #forwardValues(): Float32Array {
    if (this.#forward) return this.#forward.values();
    if (!this.#half) throw new Error('ZeRO-3 keeps no whole copy of the parameters: gather them');
    const out = new Float32Array(this.shards.paddedLength);
    this.#half.codec.decodeInto(this.#half.bytes, out);
    return out;
  }

  /** Stages 0–2 in fp32: new tensors over the forward's memory (no copy on wasm). */
  #forwardTensors(forward: ResidentFloats): tf.Tensor[][] {
    return this.#groups.groups.map((g) => g.slots.map((s) => forward.tensor(s.offset, s.shape)));
  }

  /** Stages 0–2 in half precision: tensors of the half bytes decoded, made at the step's first use. */
  #halfTensors(): tf.Tensor[][] {
    const values = this.#forwardValues();
    return this.#groups.groups.map((g) =>
      g.slots.map((s) => tensorOfCurrent(values.subarray(s.offset, s.offset + s.size), s.shape)),
    );
  }

  /**
   * Stage 3: the values of [range) from the shards that hold them (each rank sends its overlap), into `out` (called
   * at each write: see Collectives.allGather) or a new array.
   */
  async #gather(range: FlatRange, out?: () => Float32Array): Promise<Float32Array> {
    const counts = this.shards.countsOf(range);
    const from = this.#shardOffset(range.start);
    const piece = this.#master().subarray(from, from + counts[this.#pg.rank]);
    return this.#pg.allGather(piece, { counts, dtype: this.#paramDtype, out });
  }
}
