/** Public contract of the data plane. Everything above `comm/` sees only these types. */

declare const rankBrand: unique symbol;
/** A rank inside one process group (0 … size-1). Made only by `asRank`, so raw numbers cannot slip in. */
export type Rank = number & { readonly [rankBrand]: true };

export function asRank(n: number, size: number): Rank {
  if (!Number.isInteger(n) || n < 0 || n >= size) throw new RangeError(`rank ${n} is outside 0..${size - 1}`);
  return n as Rank;
}

/** How tensor values travel. Accumulation is always fp32; only the bytes on the wire change. */
export type WireDtype = 'fp32' | 'fp16' | 'bf16';
export const WIRE_DTYPES: readonly WireDtype[] = ['fp32', 'fp16', 'bf16'];

export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';
export const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'avg', 'max', 'min'];

export interface CollectiveOptions {
  dtype?: WireDtype;
}
export interface ReduceOptions extends CollectiveOptions {
  op?: ReduceOp;
}

/** What the group last did, for the heartbeat: a dead peer's report names the collective it was in. */
export interface CollectiveInfo {
  op: string;
  seq: number;
  group: string;
}

/** Bytes this process put on the wire, per op name. */
export type ByteCounts = Record<string, number>;

/**
 * Collectives over a set of ranks. Every member must call the same collectives in the same order
 * (as with torch.distributed); buffers are fp32 and results are identical on every rank.
 */
export interface Collectives {
  readonly rank: Rank;
  readonly size: number;
  /** In place; returns `buf`. */
  allReduce(buf: Float32Array, opts?: ReduceOptions): Promise<Float32Array>;
  /**
   * Returns this rank's shard of the reduction: `shardRange(input.length, size, rank)`, or with `counts` the
   * `counts[rank]` elements after the first `counts[0] + … + counts[rank-1]`. With `out` (the shard's length) it is
   * written there and returned; `out` may be `input`'s own shard (in place, as NCCL's reduce-scatter with the
   * receive buffer inside the send buffer: only that shard of `input` changes), and must not overlap it otherwise.
   */
  reduceScatter(
    input: Float32Array,
    opts?: ReduceOptions & { counts?: readonly number[]; out?: Float32Array },
  ): Promise<Float32Array>;
  /**
   * Concatenation of every rank's `shard` in rank order; `counts[r]` is rank r's length (default: all equal).
   * With `out` (the concatenation's length) it is written there and returned, and `shard` may be `out`'s own part
   * (in place, as NCCL's all-gather with the send buffer inside the receive buffer). `out` may be a function
   * returning the array, called at each write: for memory that moves while the collective waits (the wasm heap,
   * when it grows; `shard` is read before the call returns). In half precision every part, this rank's too, holds
   * the values as the wire rounded them.
   */
  allGather(
    shard: Float32Array,
    opts?: CollectiveOptions & { counts?: readonly number[]; out?: Float32Array | (() => Float32Array) },
  ): Promise<Float32Array>;
  /** In place from `root`; returns `buf`. */
  broadcast(buf: Float32Array, root: number, opts?: CollectiveOptions): Promise<Float32Array>;
  barrier(): Promise<void>;
  /** Point to point; `opts.dtype` sets the wire (fp16/bf16 halve the bytes; the receiver decodes to fp32). */
  send(buf: Float32Array, to: number, tag?: number, opts?: CollectiveOptions): Promise<void>;
  /** Receives exactly what `send(…, tag)` from `from` sent; the length and wire dtype come from the sender. */
  recv(from: number, tag?: number): Promise<Float32Array>;
  /** A group over a subset of this group's ranks (only members call it); its rank is the index in `ranks`. */
  newGroup(ranks: readonly number[]): Collectives;
}

/** The contiguous slice of a length-`length` buffer that `rank` of `size` owns: [start, end). */
export function shardRange(length: number, size: number, rank: number): { start: number; end: number } {
  return { start: Math.floor((rank * length) / size), end: Math.floor(((rank + 1) * length) / size) };
}
