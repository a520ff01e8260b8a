import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpec } from '../../src/config/schema.ts';
import { buildModel, trainableVariables } from '../../src/models/build.ts';
import { cnnBlockShapes } from '../../src/models/shapes.ts';
import { SMALL_CNN, saveAndLoad } from './fixtures.ts';

const spec = SMALL_CNN;

function weights(model: tf.LayersModel): Float32Array[] {
  return model.getWeights().map((w) => w.dataSync() as Float32Array);
}

function randomInput(n: number, seed: number): tf.Tensor4D {
  return tf.randomUniform([n, 12, 12, 2], 0, 1, 'float32', seed) as tf.Tensor4D;
}

describe('CNN', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('parses with defaults: stride 1, same padding, pool 2, relu, no dense layers', () => {
    const s = ModelSpec.parse({
      type: 'cnn',
      input: [28, 28, 1],
      conv: [{ filters: 8, kernel: 5 }],
      classes: 10,
    });
    expect(s).toEqual({
      type: 'cnn',
      input: [28, 28, 1],
      conv: [{ filters: 8, kernel: 5, stride: 1, padding: 'same' }],
      pool: 2,
      dense: [],
      classes: 10,
      activation: 'relu',
      dropout: 0,
    });
    expect(() => ModelSpec.parse({ type: 'cnn', input: [28, 28], conv: [], classes: 10 })).toThrow();
  });

  it('has the NHWC shapes of the spec: conv, pool, flatten, dense with dropout, linear logits', () => {
    const model = buildModel(spec, 1);
    expect(model.layers.map((l) => l.getClassName())).toEqual([
      'Conv2D',
      'MaxPooling2D',
      'Conv2D',
      'Flatten',
      'Dense',
      'Dropout',
      'Dense',
    ]);
    expect(cnnBlockShapes(spec)).toEqual([
      [6, 6, 6],
      [4, 4, 4],
    ]);
    expect(model.inputs[0].shape).toEqual([null, 12, 12, 2]);
    expect(model.layers[2].outputShape).toEqual([null, 4, 4, 4]);
    expect(model.outputs[0].shape).toEqual([null, 3]);
    expect(trainableVariables(model).map((v) => v.shape)).toEqual([
      [3, 3, 2, 6],
      [6],
      [3, 3, 6, 4],
      [4],
      [64, 8],
      [8],
      [8, 3],
      [3],
    ]);
    const x = randomInput(5, 1);
    const y = model.predict(x) as tf.Tensor;
    expect(y.shape).toEqual([5, 3]);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('initialises from the seed alone: Glorot-uniform kernels with receptive-field fans, zero biases', () => {
    const a = buildModel(spec, 42);
    const b = buildModel(spec, 42);
    const c = buildModel(spec, 43);
    const [wa, wb, wc] = [a, b, c].map(weights);
    expect(wa).toEqual(wb);
    expect(wa[0]).not.toEqual(wc[0]);
    expect(wa[2].subarray(0, 16)).not.toEqual(wa[0].subarray(0, 16));
    const limit = Math.sqrt(6 / (9 * 2 + 9 * 6));
    expect(Math.max(...wa[0].map(Math.abs))).toBeLessThanOrEqual(limit);
    expect(Math.max(...wa[0].map(Math.abs))).toBeGreaterThan(0.9 * limit);
    for (const bias of [wa[1], wa[3], wa[5], wa[7]]) expect(bias.every((v) => v === 0)).toBe(true);
    for (const m of [a, b, c]) m.dispose();
  });

  it('round-trips through the tfjs save/load format', async () => {
    const model = buildModel(spec, 3);
    const loaded = await saveAndLoad(model);
    expect(loaded.layers.map((l) => l.getClassName())).toEqual(model.layers.map((l) => l.getClassName()));
    const x = randomInput(2, 4);
    const [p, q] = [model, loaded].map((m) => (m.predict(x) as tf.Tensor).dataSync());
    expect(q).toEqual(p);
    for (const t of [model, loaded, x]) t.dispose();
  });
});
