import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpec } from '../../src/config/schema.ts';
import { forwardBlocks } from '../../src/engine/net.ts';
import { cnnNet } from '../../src/models/cnn.ts';
import { mlpNet } from '../../src/models/mlp.ts';
import { activationShape, stageNet } from '../../src/pipeline/stage-net.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const mlp = () => mlpNet({ type: 'mlp', layers: [12, 8, 6, 5, 3], activation: 'relu', dropout: 0.5 });
const toTensors = (net: ReturnType<typeof mlp>, values: Float32Array[]) => {
  let at = 0;
  return net.blocks.map((b) => b.params.map((p) => tf.tensor(values[at++], [...p.shape])));
};

describe('stageNet', () => {
  it('inits exactly the full net’s values of its blocks', () => {
    const net = mlp();
    const full = net.init(7);
    const parts = [stageNet(net, 0, 1), stageNet(net, 1, 3), stageNet(net, 3, 4)].map((s) => s.init(7));
    expect(parts.flat()).toEqual(full);
    expect(parts.map((p) => p.length)).toEqual([2, 4, 2]);
  });

  it('chained stages compute the full forward, dropout masks included (blocks keep their index)', () => {
    const net = mlp();
    const values = net.init(3);
    const params = toTensors(net, values);
    const x = tf.randomNormal([4, 12], 0, 1, 'float32', 5);
    const mode = { training: true, seed: 99 };
    const whole = forwardBlocks(net, params, x, mode).logits;
    const a = stageNet(net, 0, 2);
    const b = stageNet(net, 2, 4);
    const h = forwardBlocks(a, params.slice(0, 2), x, mode).logits;
    const y = forwardBlocks(b, params.slice(2), h, mode).logits;
    expect(Array.from(y.dataSync())).toEqual(Array.from(whole.dataSync()));
    // Without the index shift the masks would differ: the check above is not vacuous.
    const shifted = forwardBlocks({ ...b, blocks: net.blocks.slice(2) }, params.slice(2), h, mode).logits;
    expect(Array.from(shifted.dataSync())).not.toEqual(Array.from(whole.dataSync()));
    expect(b.inputShape).toEqual([6]);
    expect(b.inputDtype).toBe('float32');
  });

  it('knows the activation shape entering a CNN’s later blocks', () => {
    const spec = ModelSpec.parse({
      type: 'cnn',
      input: [28, 28, 1],
      conv: [{ filters: 4, kernel: 3 }],
      dense: [16],
      classes: 10,
    });
    if (spec.type !== 'cnn') throw new Error('not a cnn');
    const net = cnnNet(spec);
    expect(activationShape(net, 0)).toEqual([28, 28, 1]);
    // A same-padded 3×3 conv with 4 filters, then the default 2×2 pool.
    const after = activationShape(net, 1);
    expect(after).toEqual([14, 14, 4]);
    expect(stageNet(net, 1, net.blocks.length).inputShape).toEqual(after);
  });

  it('refuses an empty or out-of-range block range', () => {
    expect(() => stageNet(mlp(), 2, 2)).toThrow(/not a non-empty range/);
    expect(() => stageNet(mlp(), 0, 5)).toThrow(/not a non-empty range/);
  });
});
