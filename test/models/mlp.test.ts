import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ModelSpec } from '../../src/config/schema.ts';
import { buildModel, buildNet, toLayersModel, trainableVariables } from '../../src/models/build.ts';
import { withoutPrunedUnits } from '../../src/models/pruned-units.ts';
import { saveAndLoad } from './fixtures.ts';

const spec: ModelSpec = { type: 'mlp', layers: [20, 16, 16, 4], activation: 'relu', dropout: 0.2 };

function weights(model: tf.LayersModel): Float32Array[] {
  return model.getWeights().map((w) => w.dataSync() as Float32Array);
}

describe('MLP', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('has the layer sizes, dropout after hidden layers only, and linear logits', () => {
    const model = buildModel(spec, 1);
    expect(model.layers.map((l) => l.getClassName())).toEqual([
      'Dense',
      'Dropout',
      'Dense',
      'Dropout',
      'Dense',
    ]);
    expect(model.countParams()).toBe(20 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4);
    expect(trainableVariables(model).map((v) => v.shape)).toEqual([
      [20, 16],
      [16],
      [16, 16],
      [16],
      [16, 4],
      [4],
    ]);
    expect(model.outputs[0].shape).toEqual([null, 4]);
    model.dispose();
  });

  it('initialises from the seed alone: Glorot-uniform kernels, zero biases', () => {
    const a = buildModel(spec, 42);
    const b = buildModel(spec, 42);
    const c = buildModel(spec, 43);
    const [wa, wb, wc] = [a, b, c].map(weights);
    expect(wa).toEqual(wb);
    expect(wa[0]).not.toEqual(wc[0]);
    // Layers get different streams, not one stream repeated.
    expect(wa[2].subarray(0, 16)).not.toEqual(wa[0].subarray(0, 16));
    const limit = Math.sqrt(6 / (20 + 16));
    expect(Math.max(...wa[0].map(Math.abs))).toBeLessThanOrEqual(limit);
    expect(Math.max(...wa[0].map(Math.abs))).toBeGreaterThan(0.9 * limit);
    expect(wa[1].every((v) => v === 0)).toBe(true);
    for (const m of [a, b, c]) m.dispose();
  });

  it('round-trips through the tfjs save/load format', async () => {
    const model = buildModel(spec, 3);
    const loaded = await saveAndLoad(model);
    const x = tf.ones([2, 20]);
    const [p, q] = [model, loaded].map((m) => (m.predict(x) as tf.Tensor).dataSync());
    expect(q).toEqual(p);
    for (const t of [model, loaded, x]) t.dispose();
  });
});

describe('an MLP without its pruned units', () => {
  it('is the smaller MLP, computing what the masked one computes', () => {
    const mlp: Extract<ModelSpec, { type: 'mlp' }> = {
      type: 'mlp',
      layers: [6, 5, 4, 3],
      activation: 'gelu',
      dropout: 0,
    };
    const values = buildNet(mlp).init(7);
    // Units 1 and 3 of the first hidden layer, unit 0 of the second: column, bias and the row they feed.
    const cut = (l: number, u: number) => {
      const [units, next] = [mlp.layers[l + 1], mlp.layers[l + 2]];
      for (let i = 0; i < mlp.layers[l]; i++) values[2 * l][i * units + u] = 0;
      values[2 * l + 1][u] = 0;
      for (let j = 0; j < next; j++) values[2 * l + 2][u * next + j] = 0;
    };
    values[1].fill(0.1);
    values[3].fill(-0.1);
    cut(0, 1);
    cut(0, 3);
    cut(1, 0);
    const small = withoutPrunedUnits(mlp, values);
    expect(small.spec.layers).toEqual([6, 3, 3, 3]);
    expect(small.values.map((v) => v.length)).toEqual([18, 3, 9, 3, 9, 3]);
    const x = tf.randomUniform([8, 6], -1, 1, 'float32', 3);
    const full = toLayersModel(mlp, values);
    const compact = toLayersModel(small.spec, small.values);
    const a = (full.predict(x) as tf.Tensor).dataSync();
    const b = (compact.predict(x) as tf.Tensor).dataSync();
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 6);
    x.dispose();
    full.dispose();
    compact.dispose();
  });
});
