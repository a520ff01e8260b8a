/**
 * ONNX export, checked by running the file in onnxruntime-node against the tfjs model it came from: the zoo's MLP
 * and CNN and a user's layers model with every layer and activation the exporter writes, equal logits to 1e-4 and
 * the same top-1 on the MNIST test set for a trained model; refusals name the layer; the protobuf writer gives the
 * bytes the wire format specifies.
 */
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import { ModelSpec } from '../../src/config/schema.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { buildModel } from '../../src/models/build.ts';
import { layersToOnnx, OnnxExportError } from '../../src/models/onnx/from-layers.ts';
import { ProtoWriter } from '../../src/models/onnx/protobuf.ts';
import { loadOnnxRuntime, type OnnxRuntime, runOnnx } from '../../src/models/onnx/runtime.ts';
import { SMALL_CNN } from './fixtures.ts';

const ort: OnnxRuntime | undefined = (await loadOnnxRuntime()).runtime;

function randomInput(shape: number[], seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.next() * 2 - 1);
}

/** The tfjs model's prediction and the exported file's, on the same input. */
async function bothOn(model: tf.LayersModel, x: Float32Array, shape: number[]) {
  const tfjs = tf.tidy(() => (model.predict(tf.tensor(x, shape)) as tf.Tensor).dataSync() as Float32Array);
  const onnx = await runOnnx(ort!, layersToOnnx(model, 'test'), x, shape);
  return { tfjs, onnx: onnx.values, outputShape: onnx.shape };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

describe('the protobuf writer', () => {
  it('writes varints, negative int64s, fixed32 floats and length-delimited fields as the wire format says', () => {
    // The protobuf documentation's own example: field 1, varint 150.
    expect([...new ProtoWriter().int(1, 150).finish()]).toEqual([0x08, 0x96, 0x01]);
    expect([...new ProtoWriter().int(2, -1).finish()]).toEqual([0x10, ...Array(9).fill(0xff), 0x01]);
    expect([...new ProtoWriter().float(2, 1).finish()]).toEqual([0x15, 0, 0, 0x80, 0x3f]);
    expect([...new ProtoWriter().string(3, 'ab').finish()]).toEqual([0x1a, 2, 0x61, 0x62]);
    const inner = new ProtoWriter().int(1, 1);
    expect([...new ProtoWriter().message(20, inner).finish()]).toEqual([0xa2, 0x01, 2, 0x08, 0x01]);
    expect(() => new ProtoWriter().int(1, 1.5)).toThrow(/not an integer/);
  });
});

// CI installs the optional dependency, so there the suite runs or fails; elsewhere it is skipped without it.
describe.skipIf(ort === undefined && process.env['CI'] !== 'true')(
  'ONNX export, run in onnxruntime-node',
  () => {
    it('finds onnxruntime-node (an optional dependency that npm ci installs)', () => {
      expect(ort, 'onnxruntime-node did not load').toBeDefined();
    });

    it('the zoo MLP (tanh, dropout) gives the tfjs logits to 1e-4, with a symbolic batch', async () => {
      const spec = ModelSpec.parse({
        type: 'mlp',
        layers: [20, 16, 12, 5],
        activation: 'tanh',
        dropout: 0.3,
      });
      const model = buildModel(spec, 7);
      for (const batch of [1, 6]) {
        const r = await bothOn(model, randomInput([batch, 20], batch), [batch, 20]);
        expect(r.outputShape).toEqual([batch, 5]);
        expect(maxAbsDiff(r.tfjs, r.onnx)).toBeLessThan(1e-4);
      }
    });

    it('the zoo CNN (same and valid padding, pooling, flatten in NHWC order) gives the tfjs logits to 1e-4', async () => {
      const model = buildModel(SMALL_CNN, 3);
      const r = await bothOn(model, randomInput([4, 12, 12, 2], 1), [4, 12, 12, 2]);
      expect(maxAbsDiff(r.tfjs, r.onnx)).toBeLessThan(1e-4);
      const gelu = ModelSpec.parse({
        type: 'cnn',
        input: [11, 9, 1],
        conv: [
          { filters: 3, kernel: 3, stride: 2 },
          { filters: 5, kernel: 2, padding: 'valid', pool: 1 },
        ],
        dense: [7],
        classes: 4,
        activation: 'gelu',
      });
      const g = await bothOn(buildModel(gelu, 5), randomInput([3, 11, 9, 1], 2), [3, 11, 9, 1]);
      expect(maxAbsDiff(g.tfjs, g.onnx)).toBeLessThan(1e-4);
    });

    it("a user's layers model: every layer and activation written, batch norm with its moving statistics", async () => {
      const model = tf.sequential({
        layers: [
          tf.layers.conv2d({
            inputShape: [9, 7, 3],
            filters: 4,
            kernelSize: [3, 2],
            padding: 'same',
            activation: 'relu6',
          }),
          tf.layers.batchNormalization({ epsilon: 0.01 }),
          tf.layers.averagePooling2d({ poolSize: 2, padding: 'same' }),
          tf.layers.conv2d({ filters: 6, kernelSize: 2, dilationRate: 2, activation: 'elu', useBias: false }),
          tf.layers.maxPooling2d({ poolSize: [2, 1], strides: [1, 1] }),
          tf.layers.activation({ activation: 'swish' }),
          tf.layers.globalAveragePooling2d({}),
          tf.layers.dense({ units: 8, activation: 'selu' }),
          tf.layers.batchNormalization({ center: false }),
          tf.layers.reLU({ maxValue: 0.7 }),
          tf.layers.dense({ units: 8, activation: 'softplus' }),
          tf.layers.dense({ units: 8, activation: 'softsign' }),
          tf.layers.dense({ units: 8, activation: 'hardSigmoid' }),
          tf.layers.dense({ units: 8, activation: 'sigmoid' }),
          tf.layers.dropout({ rate: 0.5 }),
          tf.layers.dense({ units: 6 }),
          tf.layers.softmax(),
        ],
      });
      // Batch norm's moving statistics away from 0 and 1, so that leaving one out would show.
      for (const layer of model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) {
        layer.setWeights(
          layer
            .getWeights()
            .map((w, i) => tf.add(w, tf.randomUniform(w.shape, 0.1 * (i + 1), 0.5 * (i + 1), 'float32', i))),
        );
      }
      const r = await bothOn(model, randomInput([5, 9, 7, 3], 3), [5, 9, 7, 3]);
      expect(r.outputShape).toEqual([5, 6]);
      expect(maxAbsDiff(r.tfjs, r.onnx)).toBeLessThan(1e-4);
    });

    it('a trained MLP: the same top-1 on the whole MNIST test set, logits to 1e-4', async () => {
      const { train, test } = loadMnist();
      const n = train.length;
      const model = buildModel(ModelSpec.parse({ type: 'mlp', layers: [784, 64, 10] }), 11);
      // The zoo's models output logits.
      model.compile({
        optimizer: tf.train.adam(0.002),
        loss: (y, logits) => tf.losses.softmaxCrossEntropy(y, logits),
      });
      const xs = tf.tensor2d(train.inputs.subarray(0, n * 784), [n, 784]);
      const ys = tf.oneHot(tf.tensor1d(Int32Array.from(train.labels.subarray(0, n)), 'int32'), 10);
      await model.fit(xs, ys, { epochs: 1, batchSize: 64, verbose: 0 });
      tf.dispose([xs, ys]);
      const r = await bothOn(model, test.inputs, [test.length, 784]);
      const top1 = (v: Float32Array, i: number) => {
        const row = v.subarray(i * 10, i * 10 + 10);
        return row.indexOf(Math.max(...row));
      };
      let same = 0;
      let right = 0;
      for (let i = 0; i < test.length; i++) {
        same += top1(r.tfjs, i) === top1(r.onnx, i) ? 1 : 0;
        right += top1(r.onnx, i) === test.labels[i] ? 1 : 0;
      }
      expect(same / test.length).toBeGreaterThanOrEqual(0.995);
      expect(right / test.length).toBeGreaterThan(0.85);
      expect(maxAbsDiff(r.tfjs, r.onnx)).toBeLessThan(1e-4);
    });

    it('refuses, by name, a layer it has no form for and a model that is not a chain', () => {
      const lstm = tf.sequential({
        layers: [tf.layers.lstm({ inputShape: [4, 3], units: 2 }), tf.layers.dense({ units: 2 })],
      });
      expect(() => layersToOnnx(lstm, 'test')).toThrow(OnnxExportError);
      expect(() => layersToOnnx(lstm, 'test')).toThrow(/layer 'lstm_\w+' \(LSTM\): no ONNX form here/);
      const input = tf.input({ shape: [4] });
      const a = tf.layers.dense({ units: 4 }).apply(input) as tf.SymbolicTensor;
      const sum = tf.layers.add().apply([a, input]) as tf.SymbolicTensor;
      const branchy = tf.model({ inputs: input, outputs: sum });
      expect(() => layersToOnnx(branchy, 'test')).toThrow(/is not fed by the layer before it/);
      const causal = tf.sequential({
        layers: [
          tf.layers.conv2d({ inputShape: [5, 5, 1], filters: 1, kernelSize: 2, dataFormat: 'channelsFirst' }),
        ],
      });
      expect(() => layersToOnnx(causal, 'test')).toThrow(/dataFormat 'channelsFirst'/);
    });
  },
);
