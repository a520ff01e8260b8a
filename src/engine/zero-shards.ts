/**
 * ZeRO's shards of the flat parameter space: N contiguous shards of equal length, one per data-parallel rank.
 * The space is padded at the end to a multiple of N × ALIGN elements, so every shard has the same length (equal
 * shards make reduce-scatter and all-gather plain ring collectives) and starts on an aligned element. Rank r
 * owns [r·S, (r+1)·S); the real parameters end at `length`, the rest of the last shards is padding, which
 * stays zero in every buffer (its gradient is zero, so no optimizer moves it).
 */
import type { FlatRange, TensorSlot } from './flat-params.ts';

/** Shard boundaries fall on multiples of this many elements (16 fp32 = one 64-byte cache line). */
export const ALIGN = 16;

/** The part of one tensor that one rank's shard holds. */
export interface TensorPiece {
  readonly rank: number;
  /** Flat elements [start, end) of the tensor that this rank owns. */
  readonly range: FlatRange;
}

export class ZeroShards {
  /** Real parameters. */
  readonly length: number;
  /** Ranks. */
  readonly size: number;
  /** Elements per shard (padding included). */
  readonly shardLength: number;
  /** size × shardLength: the padded flat space. */
  readonly paddedLength: number;

  constructor(length: number, size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`ZeRO shards need ≥ 1 rank, got ${size}`);
    this.length = length;
    this.size = size;
    const unit = size * ALIGN;
    this.paddedLength = Math.max(unit, Math.ceil(length / unit) * unit);
    this.shardLength = this.paddedLength / size;
  }

  /** Rank r's shard, padding included: [r·S, (r+1)·S). */
  shard(rank: number): FlatRange {
    return { start: rank * this.shardLength, end: (rank + 1) * this.shardLength };
  }

  /** The real parameters of rank r's shard (no padding). */
  ownedParams(rank: number): FlatRange {
    const { start, end } = this.shard(rank);
    return { start: Math.min(start, this.length), end: Math.min(end, this.length) };
  }

  /** Padding elements in rank r's shard. */
  padding(rank: number): number {
    const own = this.ownedParams(rank);
    return this.shardLength - (own.end - own.start);
  }

  /** How many elements of [range) each rank owns, in rank order (they sum to the range's length). */
  countsOf(range: FlatRange): number[] {
    return Array.from({ length: this.size }, (_, r) => overlap(range, this.shard(r)));
  }

  /** The pieces of one tensor: which ranks hold which of its elements. */
  piecesOf(slot: TensorSlot): TensorPiece[] {
    const range = { start: slot.offset, end: slot.offset + slot.size };
    const out: TensorPiece[] = [];
    for (let r = 0; r < this.size; r++) {
      const s = this.shard(r);
      const start = Math.max(range.start, s.start);
      const end = Math.min(range.end, s.end);
      if (end > start) out.push({ rank: r, range: { start, end } });
    }
    return out;
  }
}

function overlap(a: FlatRange, b: FlatRange): number {
  return Math.max(0, Math.min(a.end, b.end) - Math.max(a.start, b.start));
}
