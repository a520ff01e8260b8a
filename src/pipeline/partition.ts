/**
 * Cutting a net's blocks into pipeline stages: contiguous ranges, one per stage, every stage at least one block.
 *
 *   parameters: the cut that minimises the largest stage's parameter count (DeepSpeed's `partition_method:
 *               parameters`); parameters stand in for a stage's compute and memory on the zoo's models.
 *   uniform:    equal block counts; the first (blocks mod P) stages take one block more, as DeepSpeed does.
 *   [cuts]:     explicit block indices where stages 1..P−1 begin.
 */
import type { PartitionSpec } from '../config/pipeline.ts';
import type { Net } from '../engine/net.ts';

/** Stage `stage` runs blocks [from, to) of the net. */
export interface StageRange {
  readonly stage: number;
  readonly from: number;
  readonly to: number;
  /** Scalar parameters of its blocks (or the sum of the weights given to `partitionWeights`). */
  readonly params: number;
}

export class PartitionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PartitionError';
  }
}

const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Scalar parameters of each block, in block order. */
export function blockParamCounts(net: Net): number[] {
  return net.blocks.map((b) => b.params.reduce((n, p) => n + product(p.shape), 0));
}

function checkStages(blocks: number, stages: number, what: string): void {
  if (!Number.isInteger(stages) || stages < 1)
    throw new PartitionError(`pipeline.stages must be a positive integer, got ${stages}`);
  if (stages > blocks)
    throw new PartitionError(
      `cannot cut ${what} into ${stages} stages: every stage needs at least one block (use at most ${blocks} stages)`,
    );
}

function ranges(cuts: readonly number[], weights: readonly number[]): StageRange[] {
  const bounds = [0, ...cuts, weights.length];
  return bounds.slice(0, -1).map((from, stage) => {
    const to = bounds[stage + 1];
    return { stage, from, to, params: weights.slice(from, to).reduce((a, b) => a + b, 0) };
  });
}

/** Block counts as equal as they go: the first (n mod P) stages take one more. */
export function uniformCuts(blocks: number, stages: number): number[] {
  checkStages(blocks, stages, `${blocks} blocks`);
  const base = Math.floor(blocks / stages);
  const extra = blocks % stages;
  const cuts: number[] = [];
  let at = 0;
  for (let s = 0; s < stages - 1; s++) {
    at += base + (s < extra ? 1 : 0);
    cuts.push(at);
  }
  return cuts;
}

/**
 * The contiguous cut into `stages` parts that minimises the heaviest part (exact, by dynamic programming over
 * prefix sums: O(P·n²), nothing for the few hundred blocks a model has). Among the cuts reaching that optimum it
 * returns the one whose stages fill greedily from the front, so the result is deterministic.
 */
export function balancedCuts(weights: readonly number[], stages: number): number[] {
  const n = weights.length;
  checkStages(n, stages, `${n} blocks`);
  if (weights.some((w) => !Number.isFinite(w) || w < 0))
    throw new PartitionError('block weights must be finite and non-negative');
  const prefix = [0];
  for (const w of weights) prefix.push(prefix[prefix.length - 1] + w);
  const sum = (i: number, j: number) => prefix[j] - prefix[i];
  // best[k][j]: the least possible heaviest part when the first j blocks form k parts.
  let best = prefix.map((p, j) => (j >= 1 ? p : Number.POSITIVE_INFINITY));
  for (let k = 2; k <= stages; k++) {
    const next = new Array<number>(n + 1).fill(Number.POSITIVE_INFINITY);
    for (let j = k; j <= n; j++) {
      for (let i = k - 1; i < j; i++) next[j] = Math.min(next[j], Math.max(best[i], sum(i, j)));
    }
    best = next;
  }
  const limit = best[n];
  // Greedy from the front under the optimum, leaving at least one block for each stage still to fill. Every
  // single block weighs at most `limit`, so the forced one-block stages at the end stay within it.
  const cuts: number[] = [];
  let start = 0;
  for (let s = 0; s < stages - 1; s++) {
    let end = start + 1;
    const lastAllowed = n - (stages - 1 - s);
    while (end < lastAllowed && sum(start, end + 1) <= limit) end++;
    cuts.push(end);
    start = end;
  }
  return cuts;
}

/** Checks explicit cuts against a net of `blocks` blocks and (when given) the stage count. */
export function checkCuts(cuts: readonly number[], blocks: number, stages?: number): void {
  if (stages !== undefined && cuts.length !== stages - 1)
    throw new PartitionError(
      `${cuts.length} cut(s) make ${cuts.length + 1} stages, but pipeline.stages is ${stages}`,
    );
  cuts.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 1 || c > blocks - 1)
      throw new PartitionError(
        `cut ${c} (pipeline.partition[${i}]) must be a block index in 1..${blocks - 1}: the net has ${blocks} blocks`,
      );
    if (i > 0 && c <= cuts[i - 1])
      throw new PartitionError(
        `cut ${c} (pipeline.partition[${i}]) must be above the previous cut ${cuts[i - 1]}: stages cannot be empty`,
      );
  });
}

/** Cuts blocks of the given weights into stages by `method`. */
export function partitionWeights(
  weights: readonly number[],
  stages: number,
  method: PartitionSpec,
): StageRange[] {
  if (Array.isArray(method)) {
    checkCuts(method, weights.length, stages);
    return ranges(method, weights);
  }
  const cuts = method === 'uniform' ? uniformCuts(weights.length, stages) : balancedCuts(weights, stages);
  return ranges(cuts, weights);
}

/** Cuts `net` into `stages` contiguous stages; errors name the net and its blocks. */
export function partitionNet(net: Net, stages: number, method: PartitionSpec): StageRange[] {
  const n = net.blocks.length;
  if (stages > n) {
    const names = net.blocks.map((b) => b.name).join(', ');
    throw new PartitionError(
      `cannot cut the ${net.kind} into ${stages} stages: it has ${n} block(s) (${names}) and every stage needs one`,
    );
  }
  return partitionWeights(blockParamCounts(net), stages, method);
}
