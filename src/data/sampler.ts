/**
 * torch.utils.data.DistributedSampler: each epoch, one seeded permutation of the dataset that every rank
 * computes alike; the list is padded (by wrapping around) or cut (`dropLast`) to a multiple of the world size,
 * and rank r takes the strided slice indices[r::world]. Ranks' slices are disjoint and equally long.
 */
import { deriveSeed, Rng } from '../base/rng.ts';

export interface SamplerOptions {
  /** Dataset length. */
  length: number;
  world: number;
  rank: number;
  shuffle?: boolean;
  seed?: number;
  /** Cut the tail that does not divide by `world` instead of padding it with repeated samples. */
  dropLast?: boolean;
}

export class DistributedSampler {
  /** Indices this rank gets per epoch. */
  readonly numSamples: number;
  /** numSamples × world: the length of the padded or cut list. */
  readonly totalSize: number;
  readonly #opts: Required<SamplerOptions>;
  #epoch = 0;

  constructor(opts: SamplerOptions) {
    const { length, world, rank } = opts;
    if (!Number.isInteger(world) || world < 1) throw new RangeError(`world must be ≥ 1, got ${world}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= world)
      throw new RangeError(`rank ${rank} is outside 0..${world - 1}`);
    if (!Number.isInteger(length) || length < 1)
      throw new RangeError(`dataset length must be ≥ 1, got ${length}`);
    this.#opts = { shuffle: true, seed: 0, dropLast: false, ...opts };
    this.numSamples =
      this.#opts.dropLast && length % world !== 0
        ? Math.ceil((length - world) / world)
        : Math.ceil(length / world);
    this.totalSize = this.numSamples * world;
  }

  /** Whole steps of `perStep` samples each in one epoch of this rank's (every rank runs as many). */
  steps(perStep: number): number {
    return Math.floor(this.numSamples / perStep);
  }

  /** Selects the epoch's permutation (call it before each epoch, as with torch). */
  setEpoch(epoch: number): void {
    this.#epoch = epoch;
  }

  /** This rank's indices for the current epoch. */
  indices(): Int32Array {
    const { length, world, rank, shuffle, seed } = this.#opts;
    const order = shuffle ? new Rng(deriveSeed(seed, this.#epoch)).permutation(length) : identity(length);
    const mine = new Int32Array(this.numSamples);
    // Position p of the padded list is order[p mod length]: padding wraps around as often as needed.
    for (let i = 0; i < this.numSamples; i++) mine[i] = order[(rank + i * world) % length];
    return mine;
  }
}

function identity(n: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  return out;
}
