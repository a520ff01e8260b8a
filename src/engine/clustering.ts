/**
 * Weight sharing (tfmot's `cluster_weights`, Deep Compression's trained quantization): each weight matrix and
 * kernel is clustered once into k values by 1-D k-means, and from then on every weight of a cluster holds the
 * cluster's value. Training keeps it so by training the clusters, not the weights: before the optimizer, every
 * weight's gradient becomes the mean gradient of its cluster (one small all-reduce of per-cluster sums, as a
 * cluster's weights lie in several ranks' shards), so the weights of a cluster get the same gradient, keep the
 * same optimizer state and take the same update, to the bit, at every ZeRO stage. The assignments are fixed. A
 * tensor with exact zeros (a pruned one) keeps them in a cluster of its own whose gradient is 0 (tfmot's
 * `preserve_sparsity`). Stored, a tensor is its cluster indices and a codebook.
 *
 * This is tfmot's formulation (the cluster's value is what trains, on its weights' gradients), and it needs no
 * gather of the parameters: averaging the weights after each update instead would gather them every step and move
 * each cluster by the mean of the optimizer's per-weight steps, which Adam normalises one by one.
 */
import type { FlatRange, TensorSlot } from './flat-params.ts';

export interface ClusteringOptions {
  readonly clusters: number;
  /** Centroids before k-means: evenly spaced over [min, max] (tfmot's LINEAR), or k-means++ from a fixed seed. */
  readonly init: 'linear' | 'kmeans++';
  /** Lloyd iterations of the first clustering. */
  readonly iterations: number;
}

/** One tensor clustered: each weight's cluster and each cluster's value; `zero` is the fixed 0 cluster, if any. */
export interface TensorClusters {
  readonly indices: Uint8Array;
  readonly codebook: Float32Array;
  readonly zero: number | undefined;
}

/**
 * 1-D k-means of `values` into at most `k` clusters: evenly spaced (or k-means++) centroids, then `iterations`
 * Lloyd steps (assign each value to its nearest centroid, ties to the lower; move each centroid to its mean; an
 * empty cluster keeps its value). Exact zeros, when `keepZeros`, go to a last cluster fixed at 0.
 */
export function kMeans1d(
  values: Float32Array,
  k: number,
  init: ClusteringOptions['init'],
  iterations: number,
  keepZeros: boolean,
): TensorClusters {
  const zeros = keepZeros && values.some((v) => v === 0);
  const free = zeros ? k - 1 : k;
  const members = zeros ? values.filter((v) => v !== 0) : values;
  const centroids = init === 'linear' ? linearInit(members, free) : plusPlusInit(members, free);
  const indices = new Uint8Array(values.length);
  for (let it = 0; it <= iterations; it++) {
    for (let i = 0; i < values.length; i++) {
      indices[i] = zeros && values[i] === 0 ? free : nearest(centroids, values[i]);
    }
    if (it === iterations) break;
    const sums = new Float64Array(free);
    const counts = new Uint32Array(free);
    for (let i = 0; i < values.length; i++) {
      if (indices[i] === free) continue;
      sums[indices[i]] += values[i];
      counts[indices[i]]++;
    }
    for (let c = 0; c < free; c++) if (counts[c] > 0) centroids[c] = sums[c] / counts[c];
  }
  const codebook = new Float32Array(k);
  codebook.set(centroids);
  return { indices, codebook, zero: zeros ? free : undefined };
}

function nearest(centroids: Float32Array, v: number): number {
  let best = 0;
  for (let c = 1; c < centroids.length; c++) {
    if (Math.abs(v - centroids[c]) < Math.abs(v - centroids[best])) best = c;
  }
  return best;
}

function linearInit(values: Float32Array, k: number): Float32Array {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!(lo <= hi)) return new Float32Array(k);
  return Float32Array.from({ length: k }, (_, c) =>
    k === 1 ? (lo + hi) / 2 : lo + ((hi - lo) * c) / (k - 1),
  );
}

/** k-means++ with a fixed generator: every rank draws the same centroids from the same values. */
function plusPlusInit(values: Float32Array, k: number): Float32Array {
  const centroids = new Float32Array(k);
  if (values.length === 0) return centroids;
  let state = 0x9e3779b9;
  const next = () => {
    state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return state / 2 ** 32;
  };
  centroids[0] = values[Math.floor(next() * values.length)];
  const d2 = values.map((v) => (v - centroids[0]) ** 2);
  for (let c = 1; c < k; c++) {
    const total = d2.reduce((a, b) => a + b, 0);
    let r = next() * total;
    let pick = values.length - 1;
    for (let i = 0; i < values.length; i++) {
      r -= d2[i];
      if (r <= 0) {
        pick = i;
        break;
      }
    }
    centroids[c] = values[pick];
    for (let i = 0; i < values.length; i++) d2[i] = Math.min(d2[i], (values[i] - centroids[c]) ** 2);
  }
  return centroids;
}

/** The clusters of every clustered tensor of a net, and their projection onto the rank's owned parameters. */
export class WeightClusters {
  readonly #slots: readonly TensorSlot[];
  readonly #options: ClusteringOptions;
  #clusters: TensorClusters[] = [];

  constructor(slots: readonly TensorSlot[], options: ClusteringOptions) {
    this.#slots = slots;
    this.#options = options;
  }

  /** Clusters every tensor of `full` (all parameters, flat) and writes the cluster values into it. */
  cluster(full: Float32Array): void {
    const { clusters, init, iterations } = this.#options;
    this.#clusters = this.#slots.map((s) =>
      kMeans1d(full.subarray(s.offset, s.offset + s.size), clusters, init, iterations, true),
    );
    this.#write(full, 0, full.length);
  }

  /**
   * The clusters of parameters already clustered (a resumed run's): each distinct value of a tensor one cluster, in
   * increasing order, 0 the fixed one.
   */
  restore(full: Float32Array): void {
    this.#clusters = this.#slots.map((s) => {
      const values = full.subarray(s.offset, s.offset + s.size);
      const distinct = [...new Set(values)].sort((a, b) => a - b);
      if (distinct.length > this.#options.clusters) {
        throw new Error(
          `a clustered tensor holds ${distinct.length} distinct values, more than its ${this.#options.clusters} clusters: the checkpoint was not written by a clustered run`,
        );
      }
      const at = new Map(distinct.map((v, c) => [v, c]));
      const zero = at.get(0);
      const codebook = new Float32Array(this.#options.clusters);
      codebook.set(distinct.slice(0, codebook.length));
      return { indices: Uint8Array.from(values, (v) => at.get(v) ?? 0), codebook, zero };
    });
  }

  /**
   * The gradient's per-cluster sums and counts over the owned positions `range` (`owned` is the rank's gradient
   * there): every tensor's k sums, then every tensor's k counts. The ranks' add up to the whole tensor's (at ZeRO 0,
   * where every rank owns everything, to world × it: the means are the same).
   */
  gradientSums(owned: Float32Array, range: FlatRange): Float32Array {
    const k = this.#options.clusters;
    const out = new Float32Array(2 * k * this.#slots.length);
    const counts = this.#slots.length * k;
    this.#eachOwned(range, (t, c, at) => {
      out[t * k + c] += owned[at - range.start];
      out[counts + t * k + c] += 1;
    });
    return out;
  }

  /** Every owned gradient replaced by its cluster's mean from `sums` (all ranks' `gradientSums` added); 0 for 0s. */
  shareGradients(owned: Float32Array, range: FlatRange, sums: Float32Array): void {
    const k = this.#options.clusters;
    const counts = this.#slots.length * k;
    this.#eachOwned(range, (t, c, at) => {
      const n = sums[counts + t * k + c];
      owned[at - range.start] = c === this.#clusters[t].zero || n === 0 ? 0 : sums[t * k + c] / n;
    });
  }

  /** Calls `f(tensor, cluster, flat position)` for every position of a clustered tensor inside `range`. */
  #eachOwned(range: FlatRange, f: (t: number, c: number, at: number) => void): void {
    this.#slots.forEach((s, t) => {
      const { indices } = this.#clusters[t];
      const end = Math.min(s.offset + s.size, range.end);
      for (let at = Math.max(s.offset, range.start); at < end; at++) f(t, indices[at - s.offset], at);
    });
  }

  /** Writes the cluster values into `target`, which holds the flat positions [from, to). */
  #write(target: Float32Array, from: number, to: number): void {
    this.#slots.forEach((s, t) => {
      const { indices, codebook } = this.#clusters[t];
      const start = Math.max(s.offset, from);
      const end = Math.min(s.offset + s.size, to);
      for (let at = start; at < end; at++) target[at - from] = codebook[indices[at - s.offset]];
    });
  }
}
