/**
 * Units and heads pruning as the engine masks them and as the run writes the model: half of a CNN's conv channels
 * and hidden dense units pruned by `MagnitudePruner` (what each feeds zeroed with it, through Flatten's NHWC order
 * and the next conv's window), half of a Transformer's attention heads; then removed: the smaller model computes
 * the masked one's logits.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpec } from '../../src/config/schema.ts';
import { forwardBlocks, type Net } from '../../src/engine/net.ts';
import { ParamGroups } from '../../src/engine/param-groups.ts';
import { headGroups, MagnitudePruner, type PrunedGroups, unitGroups } from '../../src/engine/pruning.ts';
import { buildNet, toLayersModel } from '../../src/models/build.ts';
import { withoutPrunedHeads, withoutPrunedUnits } from '../../src/models/pruned-units.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const cnn = ModelSpec.parse({
  type: 'cnn',
  input: [8, 8, 2],
  conv: [
    { filters: 4, kernel: 3 },
    { filters: 6, kernel: 3, pool: 1 },
  ],
  pool: 2,
  dense: [8],
  classes: 3,
  activation: 'gelu',
});

describe('units pruning of a CNN', () => {
  it('masks half of each layer’s units with what they feed, and the CNN without them computes the same', () => {
    if (cnn.type !== 'cnn') throw new Error('a CNN');
    const net = buildNet(cnn);
    const groups = new ParamGroups(net, []);
    const units = unitGroups(net, groups);
    // conv0 → conv1 (its 3×3 window), conv1 → dense (4×4 pixels after the pool), dense → logits.
    expect(units.map((g) => [g.units, g.repeat])).toEqual([
      [4, 9],
      [6, 16],
      [8, 1],
    ]);
    const values = net.init(5).map((v, i) => (i % 2 === 1 ? v.map((_, j) => 0.01 * (j + 1)) : v));
    const cut = masked(groups, values, { structure: 'units', groups: units });
    const small = withoutPrunedUnits(cnn, cut);
    expect(small.spec.conv.map((c) => c.filters)).toEqual([2, 3]);
    expect(small.spec.dense).toEqual([4]);
    // conv1 lost the input channels of conv0's pruned ones; the dense layer the rows of conv1's, at every pixel.
    expect(small.values.map((v) => v.length)).toEqual([
      3 * 3 * 2 * 2,
      2,
      3 * 3 * 2 * 3,
      3,
      16 * 3 * 4,
      4,
      4 * 3,
      3,
    ]);
    const x = tf.randomUniform([5, 8, 8, 2], -1, 1, 'float32', 9);
    const [full, compact] = [toLayersModel(cnn, cut), toLayersModel(small.spec, small.values)];
    const a = (full.predict(x) as tf.Tensor).dataSync();
    const b = (compact.predict(x) as tf.Tensor).dataSync();
    expect(a.some((v) => v !== 0)).toBe(true);
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 5);
    for (const t of [x, full, compact]) t.dispose();
  });
});

/** `values` laid out flat, masked at sparsity 0.5 by the pruner of `grouped`, and read back per tensor. */
function masked(groups: ParamGroups, values: readonly Float32Array[], grouped: PrunedGroups): Float32Array[] {
  const flat = new Float32Array(groups.length);
  for (const [i, slot] of groups.slots.entries()) flat.set(values[i], slot.offset);
  const slots =
    grouped.structure === 'units'
      ? [...new Set(grouped.groups.flatMap((g) => [g.kernel, g.bias, g.next]))]
      : grouped.groups.flatMap((g) => g.slots);
  const pruner = new MagnitudePruner(slots, { start: 0, end: groups.length }, grouped);
  pruner.update(flat, 0.5);
  pruner.apply(flat);
  return groups.slots.map((slot) => flat.slice(slot.offset, slot.offset + slot.size));
}

describe('heads pruning of a Transformer', () => {
  it('masks half of each layer’s heads, and the Transformer without them computes the same', () => {
    const spec = ModelSpec.parse({
      type: 'transformer',
      vocab: 12,
      seq_len: 6,
      dim: 8,
      heads: 4,
      layers: 2,
      ffn: 16,
      classes: 3,
    });
    if (spec.type !== 'transformer') throw new Error('a Transformer');
    const net = buildNet(spec);
    const groups = new ParamGroups(net, []);
    const heads = headGroups(net, groups);
    expect(heads.map((g) => [g.heads, g.slots.length])).toEqual([
      [4, 7],
      [4, 7],
    ]);
    const values = masked(groups, net.init(3), { structure: 'heads', groups: heads });
    const small = withoutPrunedHeads(spec, values);
    expect(small.spec.layer_heads).toEqual([2, 2]);
    const run = (n: Net, v: readonly Float32Array[]) => {
      let at = 0;
      const params = n.blocks.map((b) => b.params.map((p) => tf.tensor(v[at++], p.shape as number[])));
      const ids = tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0], [2, 6], 'int32');
      return forwardBlocks(n, params, ids, { training: false, seed: 0 }).logits.dataSync();
    };
    const a = run(net, values);
    const b = run(buildNet(small.spec), small.values);
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 5);
  });
});
