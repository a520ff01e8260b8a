import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelSpec } from '../../src/config/schema.ts';
import { buildModel } from '../../src/models/build.ts';
import { loadModel, modelDirHandler, saveModel } from '../../src/models/save.ts';

const spec: ModelSpec = { type: 'mlp', layers: [12, 8, 8, 3], activation: 'tanh', dropout: 0.5 };
let tmp: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-save-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function predict(model: tf.LayersModel, x: tf.Tensor): Float32Array {
  return tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
}

describe('tfjs model directory without tfjs-node', () => {
  it('saves model.json + weights.bin; loadModel and tf.loadLayersModel(handler) predict identically', async () => {
    const model = buildModel(spec, 7);
    const dir = join(tmp, 'm1');
    await saveModel(model, dir);
    expect(readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.modelTopology.class_name ?? json.modelTopology.config).toBeDefined();
    expect(json.weightsManifest[0].paths).toEqual(['./weights.bin']);
    expect(readFileSync(join(dir, 'weights.bin')).length).toBe(model.countParams() * 4);

    const x = tf.randomUniform([5, 12], -1, 1, 'float32', 3);
    const a = await loadModel(dir);
    const b = await tf.loadLayersModel(modelDirHandler(dir));
    expect(predict(a, x)).toEqual(predict(model, x));
    expect(predict(b, x)).toEqual(predict(model, x));
    expect(b.layers.map((l) => l.getClassName())).toEqual(model.layers.map((l) => l.getClassName()));
    for (const m of [model, a, b]) m.dispose();
    x.dispose();
  });

  it('replaces an existing model atomically and leaves no temporary directory', async () => {
    const dir = join(tmp, 'm2');
    const m1 = buildModel(spec, 1);
    const m2 = buildModel(spec, 2);
    await saveModel(m1, dir);
    await m2.save(modelDirHandler(dir));
    const x = tf.ones([1, 12]);
    const back = await loadModel(dir);
    expect(predict(back, x)).toEqual(predict(m2, x));
    expect(readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    for (const m of [m1, m2, back]) m.dispose();
  });

  it('names the file when a model directory is missing or damaged', async () => {
    await expect(loadModel(join(tmp, 'nope'))).rejects.toThrow(/nope.*model\.json does not exist/);
    const dir = join(tmp, 'm3');
    const m = buildModel(spec, 1);
    await saveModel(m, dir);
    writeFileSync(join(dir, 'weights.bin'), Buffer.alloc(8));
    await expect(loadModel(dir)).rejects.toThrow(/m3: the weights files hold 8 bytes/);
    expect(existsSync(join(dir, 'model.json'))).toBe(true);
    m.dispose();
  });
});
