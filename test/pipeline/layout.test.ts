import { describe, expect, it } from 'vitest';
import { formatLayout, pipelineLayout, rankOf, replicaOf, stageOf } from '../../src/pipeline/layout.ts';
import { partitionWeights } from '../../src/pipeline/partition.ts';

describe('pipelineLayout', () => {
  it('puts rank = stage × D + replica: data-parallel groups on consecutive ranks', () => {
    const l = pipelineLayout(8, 2);
    expect(l.replicas).toBe(4);
    expect(l.dataParallelGroups).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    expect(l.pipelines).toEqual([
      [0, 4],
      [1, 5],
      [2, 6],
      [3, 7],
    ]);
    for (let r = 0; r < 8; r++) expect(rankOf(l, stageOf(l, r), replicaOf(l, r))).toBe(r);
    expect(stageOf(l, 5)).toBe(1);
    expect(replicaOf(l, 5)).toBe(1);
  });

  it('covers every rank exactly once in each kind of group', () => {
    for (const [world, P] of [
      [6, 3],
      [4, 4],
      [5, 1],
      [12, 2],
    ]) {
      const l = pipelineLayout(world, P);
      const all = (gs: readonly (readonly number[])[]) => gs.flat().sort((a, b) => a - b);
      const ranks = Array.from({ length: world }, (_, r) => r);
      expect(all(l.dataParallelGroups)).toEqual(ranks);
      expect(all(l.pipelines)).toEqual(ranks);
      expect(l.pipelines.every((p) => p.length === P)).toBe(true);
      expect(l.pipelines.every((p) => p.every((r, s) => stageOf(l, r) === s))).toBe(true);
    }
  });

  it('refuses a world that is not a multiple of the stages', () => {
    expect(() => pipelineLayout(6, 4)).toThrow(/a world of 6 workers cannot hold 4 pipeline stages/);
    expect(() => pipelineLayout(4, 0)).toThrow(/positive integer/);
  });
});

describe('formatLayout', () => {
  it('prints one row per stage with its blocks, parameters and data-parallel group', () => {
    const l = pipelineLayout(4, 2);
    const ranges = partitionWeights([401_920, 262_656, 5_130], 2, 'parameters');
    const text = formatLayout(l, {
      ranges,
      blockNames: ['dense0', 'dense1', 'dense2'],
      schedule: '1f1b',
      microBatches: 8,
    });
    expect(text).toBe(
      [
        'pipeline   2 stages × 2 data-parallel = world 4',
        'schedule   1f1b, 8 micro-batches; ideal bubble 11.1%',
        '           stage  blocks               params   ranks (data-parallel group)',
        '           0      0 (dense0)           401,920  0 1',
        '           1      1-2 (dense1…dense2)  267,786  2 3',
        'pipelines  replica 0: 0 → 2; replica 1: 1 → 3',
      ].join('\n'),
    );
  });

  it('prints the rank table alone when nothing else is known', () => {
    expect(formatLayout(pipelineLayout(2, 2)).split('\n')).toEqual([
      'pipeline   2 stages × 1 data-parallel = world 2',
      '           stage  blocks  params  ranks (data-parallel group)',
      '           0                      0',
      '           1                      1',
      'pipelines  replica 0: 0 → 1',
    ]);
  });
});
