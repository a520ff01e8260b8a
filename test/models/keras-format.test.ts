/**
 * A model converted from Keras reads as the same model saved by tfjs: tensorflowjs_converter writes a Keras 3
 * model in Keras 3's own serialisation (inbound nodes as {args, kwargs} of keras tensors, `batch_shape`, flat
 * `input_layers`, dtype policies, scoped weight names), which tf.loadLayersModel does not read; kd-launch does.
 * The fixture rewrites a tfjs-saved model.json into that form, field by field.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardBlocks } from '../../src/engine/net.ts';
import { saveModel } from '../../src/models/save.ts';
import { readTfjsModel } from '../../src/models/tfjs-dir.ts';

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'kd-keras-format-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Json = Record<string, unknown>;

const kerasTensor = (history: unknown[]) => ({
  class_name: '__keras_tensor__',
  config: { shape: null, dtype: 'float32', keras_history: history.slice(0, 3) },
});
const policy = (name: unknown) => ({ module: 'keras', class_name: 'DTypePolicy', config: { name } });

/** A tfjs-saved functional model.json as Keras 3 and its converter write it. */
function asKeras3(json: Json): Json {
  const topology = json['modelTopology'] as Json;
  const model = topology['model_config'] as Json | undefined;
  const config = ((model ?? topology)['config'] as Json) ?? {};
  const layers = (config['layers'] as Json[]).map((layer) => {
    const c = { ...(layer['config'] as Json) };
    if ('batch_input_shape' in c) {
      c['batch_shape'] = c['batch_input_shape'];
      delete c['batch_input_shape'];
    }
    c['dtype'] = policy(c['dtype'] ?? 'float32');
    const nodes = (layer['inbound_nodes'] as unknown[][][]).map((node) => ({
      args: node.length === 1 ? [kerasTensor(node[0])] : [node.map(kerasTensor)],
      kwargs: {},
    }));
    return { module: 'keras.layers', ...layer, config: c, inbound_nodes: nodes };
  });
  const flat = (key: string) => (config[key] as unknown[][])[0];
  const keras = {
    class_name: 'Functional',
    config: { ...config, layers, input_layers: flat('input_layers'), output_layers: flat('output_layers') },
  };
  // Scoped weight names, as Keras 3 variable paths are.
  const manifest = (json['weightsManifest'] as { paths: string[]; weights: Json[] }[]).map((g) => ({
    ...g,
    weights: g.weights.map((w) => ({ ...w, name: `functional/${w['name']}` })),
  }));
  return {
    ...json,
    generatedBy: 'keras v3.6.0',
    convertedBy: 'TensorFlow.js Converter v4.22.0',
    modelTopology: { keras_version: '3.6.0', backend: 'tensorflow', model_config: keras },
    weightsManifest: manifest,
  };
}

describe('a model converted from Keras 3', () => {
  it('reads as the same model: blocks, weights and outputs equal the tfjs-saved one', async () => {
    const input = tf.input({ shape: [6, 6, 1] });
    const conv = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', name: 'conv' }).apply(input);
    const norm = tf.layers.batchNormalization({ name: 'norm' }).apply(conv);
    // A capped ReLU (Keras' max_value; relu6 in MobileNets): the cap must hold in kd-launch's forward too.
    const relu = tf.layers.reLU({ maxValue: 0.5, name: 'relu' }).apply(norm);
    const skip = tf.layers.add({ name: 'skip' }).apply([relu, conv] as tf.SymbolicTensor[]);
    const flat = tf.layers.flatten({ name: 'flat' }).apply(skip);
    const out = tf.layers.dense({ units: 4, activation: 'softmax', name: 'out' }).apply(flat);
    const model = tf.model({ inputs: input, outputs: out as tf.SymbolicTensor });
    const saved = join(dir, 'tfjs');
    await saveModel(model, saved);
    const converted = join(dir, 'keras3');
    await saveModel(model, converted);
    const json = JSON.parse(readFileSync(join(converted, 'model.json'), 'utf8')) as Json;
    writeFileSync(join(converted, 'model.json'), JSON.stringify(asKeras3(json)));
    // tfjs' own loader cannot read it (the reason converted Keras 3 models need kd-launch's reader here).
    await expect(
      tf.loadLayersModel(tf.io.fromMemory(asKeras3(json) as unknown as tf.io.ModelJSON)),
    ).rejects.toThrow();

    const a = readTfjsModel(saved);
    const b = readTfjsModel(converted);
    expect(b.net.blocks.map((x) => x.name)).toEqual(a.net.blocks.map((x) => x.name));
    expect(b.values).toEqual(a.values);
    expect(b.weightNames.every((n) => n.startsWith('functional/'))).toBe(true);
    const x = tf.randomNormal([3, 6, 6, 1], 0, 1, 'float32', 3);
    const run = (m: typeof a) => {
      let k = 0;
      const params = m.net.blocks.map((blk) => blk.params.map((p) => tf.tensor(m.values[k++], [...p.shape])));
      return Array.from(forwardBlocks(m.net, params, x, { training: false, seed: 0 }).logits.dataSync());
    };
    expect(run(b)).toEqual(run(a));
    x.dispose();
    model.dispose();
  });
});
