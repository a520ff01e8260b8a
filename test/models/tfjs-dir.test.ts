/**
 * A TensorFlow.js layers model of the user's own as a Net: what it computes equals what tfjs computes, its saved
 * weights are the Net's initial values, it exports back to the same topology, and layers kd-launch cannot run
 * are refused by name.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelSpec } from '../../src/config/schema.ts';
import { countParams, forwardBlocks } from '../../src/engine/net.ts';
import { loadNetModel, saveNetModel } from '../../src/models/net-dir.ts';
import { loadModel, saveModel } from '../../src/models/save.ts';
import { readTfjsModel } from '../../src/models/tfjs-dir.ts';
import { activationShape } from '../../src/pipeline/stage-net.ts';

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'kd-tfjs-dir-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cnn(): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [8, 8, 1],
        filters: 4,
        kernelSize: 3,
        activation: 'relu',
        padding: 'same',
      }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.conv2d({ filters: 6, kernelSize: 2, activation: 'tanh', strides: 2 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 16, activation: 'relu' }),
      tf.layers.dropout({ rate: 0.25 }),
      tf.layers.layerNormalization(),
      tf.layers.dense({ units: 3, activation: 'softmax' }),
    ],
  });
}

/** The Net's parameters as tensors, block by block: `values` (default: the saved weights) in `netParams` order. */
function blockParams(path: string, values?: readonly Float32Array[]): tf.Tensor[][] {
  const { net, values: saved } = readTfjsModel(path);
  const flat = values ?? saved;
  let k = 0;
  return net.blocks.map((b) => b.params.map((p) => tf.tensor(flat[k++], [...p.shape])));
}

/** The Net's probabilities (softmax of its logits) and the tfjs model's prediction on the same inputs. */
function bothPredict(path: string, model: tf.LayersModel, x: tf.Tensor, values?: Float32Array[]) {
  const { net } = readTfjsModel(path);
  return tf.tidy(() => {
    const logits = forwardBlocks(net, blockParams(path, values), x, { training: false, seed: 0 }).logits;
    return {
      ours: Array.from(tf.softmax(logits).dataSync()),
      theirs: Array.from((model.predict(x) as tf.Tensor).dataSync()),
    };
  });
}

function close(a: number[], b: number[], tol: number): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(tol);
}

describe('a user tfjs layers model as a Net', () => {
  it('computes what tfjs computes (conv, pooling, flatten, dense, dropout, layer norm; the final softmax as logits)', async () => {
    const model = cnn();
    const path = join(dir, 'cnn');
    await saveModel(model, path);
    const { net, values } = readTfjsModel(path);
    expect(net.kind).toBe('tfjs');
    expect(net.inputShape).toEqual([8, 8, 1]);
    expect(countParams(net)).toBe(model.countParams());
    expect(net.blocks.map((b) => b.name)).toEqual(model.layers.map((l) => l.name));
    // The saved weights are the initial values, in the model's own order.
    const saved = model.getWeights().map((w) => Array.from(w.dataSync()));
    expect(values.map((v) => Array.from(v))).toEqual(saved);
    const x = tf.randomNormal([5, 8, 8, 1], 0, 1, 'float32', 3);
    const { ours, theirs } = bothPredict(path, model, x);
    close(ours, theirs, 1e-6);
    x.dispose();
    model.dispose();
  });

  it('exports trained weights back to the user’s topology, loadable by tf.loadLayersModel', async () => {
    const model = cnn();
    const path = join(dir, 'cnn-export-src');
    await saveModel(model, path);
    const { values } = readTfjsModel(path);
    const trained = values.map((v) => v.map((a, i) => a + 0.01 * Math.sin(i)));
    const out = join(dir, 'cnn-exported');
    await saveNetModel(out, ModelSpec.parse({ path }), trained);
    const loaded = await loadModel(out);
    expect(loaded.layers.map((l) => l.getClassName())).toEqual(model.layers.map((l) => l.getClassName()));
    expect(loaded.getWeights().map((w) => Array.from(w.dataSync()))).toEqual(
      trained.map((v) => Array.from(v)),
    );
    const x = tf.randomNormal([4, 8, 8, 1], 0, 1, 'float32', 4);
    const both = bothPredict(out, loaded, x, trained);
    close(both.ours, both.theirs, 1e-6);
    // The exported directory is a model directory of its own (a teacher, a later stage): it reads back.
    const back = loadNetModel(out);
    expect(back.values.map((v) => Array.from(v))).toEqual(trained.map((v) => Array.from(v)));
    x.dispose();
    loaded.dispose();
    model.dispose();
  });

  it('reads embeddings (int32 input) and functional chains', async () => {
    const input = tf.input({ shape: [6], dtype: 'int32' });
    const e = tf.layers.embedding({ inputDim: 10, outputDim: 4 }).apply(input) as tf.SymbolicTensor;
    const f = tf.layers.flatten().apply(e) as tf.SymbolicTensor;
    const y = tf.layers.dense({ units: 2 }).apply(f) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: y });
    const path = join(dir, 'embed');
    await saveModel(model, path);
    const { net } = readTfjsModel(path);
    expect(net.inputDtype).toBe('int32');
    expect(net.blocks.map((b) => b.name)).toEqual(model.layers.slice(1).map((l) => l.name));
    const x = tf.tensor2d(
      [
        [1, 2, 3, 4, 5, 6],
        [9, 8, 7, 6, 5, 4],
      ],
      [2, 6],
      'int32',
    );
    const ours = tf.tidy(() =>
      Array.from(forwardBlocks(net, blockParams(path), x, { training: false, seed: 0 }).logits.dataSync()),
    );
    close(ours, Array.from((model.predict(x) as tf.Tensor).dataSync()), 1e-6);
    x.dispose();
    model.dispose();
  });

  it('reads branching functional graphs: a residual Add and a Concatenate, each layer a block', async () => {
    const input = tf.input({ shape: [6, 6, 2] });
    const stem = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', name: 'stem' }).apply(input);
    const relu = tf.layers.activation({ activation: 'relu', name: 'relu' }).apply(stem);
    const branch = tf.layers
      .conv2d({ filters: 3, kernelSize: 3, padding: 'same', name: 'branch' })
      .apply(relu);
    const norm = tf.layers.batchNormalization({ name: 'norm' }).apply(branch);
    const res = tf.layers.add({ name: 'res' }).apply([relu, norm] as tf.SymbolicTensor[]);
    const flat = tf.layers.flatten({ name: 'flat' }).apply(res);
    const d1 = tf.layers.dense({ units: 4, activation: 'tanh', name: 'd1' }).apply(flat);
    const d2 = tf.layers.dense({ units: 5, name: 'd2' }).apply(flat);
    const cat = tf.layers.concatenate({ name: 'cat' }).apply([d1, d2] as tf.SymbolicTensor[]);
    const out = tf.layers.dense({ units: 3, activation: 'softmax', name: 'out' }).apply(cat);
    const model = tf.model({ inputs: input, outputs: out as tf.SymbolicTensor });
    const path = join(dir, 'residual');
    await saveModel(model, path);
    const { net } = readTfjsModel(path);
    expect(net.blocks.map((b) => b.name)).toEqual(model.layers.slice(1).map((l) => l.name));
    const x = tf.randomNormal([5, 6, 6, 2], 0, 1, 'float32', 9);
    const both = bothPredict(path, model, x);
    close(both.ours, both.theirs, 1e-5);
    // Between 'branch' and 'res' the skip tensor travels beside the branch: the block boundary is one tensor.
    expect(activationShape(net, 3)).toEqual([6 * 6 * 3 * 2]);
    expect(activationShape(net, net.blocks.length - 1)).toEqual([9]);
    x.dispose();
    model.dispose();
  });

  it('refuses what it cannot run, naming the layer', async () => {
    const refused = async (name: string, model: tf.LayersModel, message: RegExp) => {
      const path = join(dir, name);
      await saveModel(model, path);
      expect(() => readTfjsModel(path)).toThrow(message);
      model.dispose();
    };
    // A BatchNormalization over another axis than the channels is refused when the net first runs (the launcher
    // runs it on one sample before any worker starts).
    const bnPath = join(dir, 'bn-axis');
    const bn = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [4, 4, 2], filters: 2, kernelSize: 1 }),
        tf.layers.batchNormalization({ axis: 1, name: 'bn_axis' }),
      ],
    });
    await saveModel(bn, bnPath);
    bn.dispose();
    const { net } = readTfjsModel(bnPath);
    expect(() => activationShape(net, net.blocks.length)).toThrow(
      /layer 'bn_axis' \(BatchNormalization\) normalises axis 1: kd-launch runs the last \(channels\) axis only/,
    );
    await refused(
      'lstm',
      tf.sequential({ layers: [tf.layers.lstm({ inputShape: [5, 2], units: 3, name: 'rnn' })] }),
      /layer 'rnn' \(LSTM\) is not a layer kd-launch runs/,
    );
    const a = tf.input({ shape: [4] });
    const shared = tf.layers.dense({ units: 4, name: 'twice' });
    const b = shared.apply(a) as tf.SymbolicTensor;
    const c = tf.layers.add({ name: 'join' }).apply([a, shared.apply(b) as tf.SymbolicTensor]);
    await refused(
      'shared',
      tf.model({ inputs: a, outputs: c as tf.SymbolicTensor }),
      /layer 'twice' \(Dense\) is called 2 times: kd-launch trains each layer once \(no shared layers\)/,
    );
    const left = tf.layers.dense({ units: 2, name: 'left' }).apply(a) as tf.SymbolicTensor;
    const right = tf.layers.dense({ units: 2, name: 'right' }).apply(a) as tf.SymbolicTensor;
    await refused(
      'two-outputs',
      tf.model({ inputs: a, outputs: [left, right] }),
      /the model has 2 outputs: kd-launch trains models with one input and one output/,
    );
    expect(() => readTfjsModel(join(dir, 'nowhere'))).toThrow(/no model\.json in/);
  });
});
