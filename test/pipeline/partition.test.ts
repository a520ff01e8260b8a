import { describe, expect, it } from 'vitest';
import { PipelineSpec } from '../../src/config/pipeline.ts';
import { countParams } from '../../src/engine/net.ts';
import { mlpNet } from '../../src/models/mlp.ts';
import {
  balancedCuts,
  blockParamCounts,
  checkCuts,
  PartitionError,
  partitionNet,
  partitionWeights,
  uniformCuts,
} from '../../src/pipeline/partition.ts';

const sizes = (r: { from: number; to: number }[]) => r.map((x) => x.to - x.from);
const heaviest = (weights: number[], cuts: number[]) => {
  const b = [0, ...cuts, weights.length];
  return Math.max(
    ...b.slice(0, -1).map((from, i) => weights.slice(from, b[i + 1]).reduce((a, c) => a + c, 0)),
  );
};

/** Every contiguous cut into `stages` non-empty parts: the reference for the optimum. */
function* allCuts(n: number, stages: number, from = 1): Generator<number[]> {
  if (stages === 1) {
    yield [];
    return;
  }
  for (let c = from; c <= n - stages + 1; c++)
    for (const rest of allCuts(n, stages - 1, c + 1)) yield [c, ...rest];
}

describe('uniform', () => {
  it('gives equal block counts, the first stages one more when they do not divide', () => {
    expect(uniformCuts(8, 4)).toEqual([2, 4, 6]);
    expect(uniformCuts(10, 4)).toEqual([3, 6, 8]);
    expect(sizes(partitionWeights([1, 1, 1, 1, 1, 1, 1], 3, 'uniform'))).toEqual([3, 2, 2]);
    expect(uniformCuts(3, 1)).toEqual([]);
  });
});

describe('parameters', () => {
  it('minimises the heaviest stage, as an exhaustive search does', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + (rnd() % 9);
      const weights = Array.from({ length: n }, () => rnd() % 100);
      for (let P = 1; P <= n; P++) {
        const cuts = balancedCuts(weights, P);
        expect(cuts).toHaveLength(P - 1);
        checkCuts(cuts, n, P);
        const best = Math.min(...[...allCuts(n, P)].map((c) => heaviest(weights, c)));
        expect(heaviest(weights, cuts), `${weights} into ${P}`).toBe(best);
      }
    }
  });

  it('balances a transformer-like stack and handles parameter-free blocks', () => {
    // Embedding, 6 equal layers, a head: 2 stages put the heavy ends apart.
    const w = [50, 10, 10, 10, 10, 10, 10, 50];
    const r = partitionWeights(w, 2, 'parameters');
    expect(r.map((x) => x.params)).toEqual([80, 80]);
    expect(r.map((x) => [x.from, x.to])).toEqual([
      [0, 4],
      [4, 8],
    ]);
    // Ties go to the front: the parameter-free block after the first 5 joins stage 0.
    expect(sizes(partitionWeights([0, 0, 5, 0, 5, 0], 2, 'parameters'))).toEqual([4, 2]);
    expect(sizes(partitionWeights([0, 0, 0], 3, 'parameters'))).toEqual([1, 1, 1]);
  });

  it('cuts a zoo MLP by its parameter counts', () => {
    const net = mlpNet({ type: 'mlp', layers: [784, 512, 512, 10], activation: 'relu', dropout: 0 });
    expect(blockParamCounts(net)).toEqual([784 * 512 + 512, 512 * 512 + 512, 512 * 10 + 10]);
    const two = partitionNet(net, 2, 'parameters');
    expect(two.map((s) => [s.stage, s.from, s.to])).toEqual([
      [0, 0, 1],
      [1, 1, 3],
    ]);
    expect(two.reduce((n, s) => n + s.params, 0)).toBe(countParams(net));
    expect(sizes(partitionNet(net, 3, 'uniform'))).toEqual([1, 1, 1]);
    expect(() => partitionNet(net, 4, 'parameters')).toThrow(
      /cannot cut the mlp into 4 stages: it has 3 block\(s\) \(.+\) and every stage needs one/,
    );
  });
});

describe('explicit cuts', () => {
  it('start each stage at a cut', () => {
    const r = partitionWeights([1, 2, 3, 4, 5, 6], 3, [2, 5]);
    expect(r).toEqual([
      { stage: 0, from: 0, to: 2, params: 3 },
      { stage: 1, from: 2, to: 5, params: 12 },
      { stage: 2, from: 5, to: 6, params: 6 },
    ]);
  });

  it('refuse cuts that are out of range, not increasing, or the wrong number', () => {
    const w = [1, 1, 1, 1];
    expect(() => partitionWeights(w, 2, [0])).toThrow(
      /cut 0 \(pipeline.partition\[0\]\) must be a block index in 1..3/,
    );
    expect(() => partitionWeights(w, 2, [4])).toThrow(/must be a block index in 1..3: the net has 4 blocks/);
    expect(() => partitionWeights(w, 3, [2, 2])).toThrow(
      /cut 2 \(pipeline.partition\[1\]\) must be above the previous cut 2/,
    );
    expect(() => partitionWeights(w, 3, [2])).toThrow(/1 cut\(s\) make 2 stages, but pipeline.stages is 3/);
    expect(() => partitionWeights(w, 2, [1.5])).toThrow(PartitionError);
  });
});

describe('errors', () => {
  it('name more stages than blocks, and a bad stage count', () => {
    expect(() => uniformCuts(2, 3)).toThrow(
      /cannot cut 2 blocks into 3 stages: every stage needs at least one block/,
    );
    expect(() => balancedCuts([1, 2], 0)).toThrow(/pipeline.stages must be a positive integer, got 0/);
    expect(() => balancedCuts([1, -2], 2)).toThrow(/non-negative/);
  });
});

describe('PipelineSpec', () => {
  it('defaults to 1F1B balanced by parameters', () => {
    expect(PipelineSpec.parse({ stages: 2, micro_batches: 4 })).toEqual({
      stages: 2,
      micro_batches: 4,
      schedule: '1f1b',
      partition: 'parameters',
    });
    expect(
      PipelineSpec.parse({ stages: 3, micro_batches: 8, schedule: 'gpipe', partition: [2, 5] }).partition,
    ).toEqual([2, 5]);
  });

  it('rejects unknown keys, schedules and malformed cuts', () => {
    const issues = (v: unknown) => {
      const r = PipelineSpec.safeParse(v);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({ stages: 2, micro_batches: 4, scheduel: 'gpipe' })).toHaveLength(1);
    expect(issues({ stages: 2, micro_batches: 4, schedule: 'interleaved' })[0]).toMatch(/^schedule:/);
    expect(issues({ stages: 3, micro_batches: 4, partition: [5, 2] })[0]).toMatch(/strictly increasing/);
    expect(issues({ stages: 3, micro_batches: 4, partition: [2] })).toEqual([
      'partition: 1 cut(s) make 2 stages, but stages is 3',
    ]);
    expect(issues({ stages: 0, micro_batches: 4 })[0]).toMatch(/^stages:/);
  });
});
