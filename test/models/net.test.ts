/**
 * The zoo's Nets against their tfjs layers form: the same initial values, the same forward, the same gradients
 * (on the cpu backend and on wasm with kd-launch's kernels, as workers run), seeded dropout, and export through
 * the layers format.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installBlasKernels, uninstallBlasKernels } from '../../src/backend/blas/index.ts';
import { ModelSpec } from '../../src/config/schema.ts';
import { forwardBlocks, type Net, netParams } from '../../src/engine/net.ts';
import { buildModel, buildNet, toLayersModel, trainableVariables } from '../../src/models/build.ts';
import { microBatchSeed } from '../../src/models/dropout.ts';
import { loadModel, saveModel } from '../../src/models/save.ts';
import { expectClose, randomArray } from '../backend/helpers.ts';
import { SMALL_CNN } from './fixtures.ts';

const MLP = ModelSpec.parse({
  type: 'mlp',
  layers: [20, 16, 16, 4],
  activation: 'relu',
  dropout: 0.2,
}) as Extract<ModelSpec, { type: 'mlp' }>;
const CNN = SMALL_CNN;
/** Every activation path: relu fused into the kernels, tanh and gelu applied after them; a strided conv. */
const SPECS: [string, ModelSpec][] = [
  ['MLP relu', MLP],
  ['MLP gelu', { ...MLP, activation: 'gelu' }],
  ['CNN relu', CNN],
  [
    'CNN tanh, strided, no dense hidden',
    ModelSpec.parse({
      type: 'cnn',
      input: [9, 9, 3],
      conv: [{ filters: 5, kernel: 3, stride: 2 }],
      pool: 1,
      classes: 4,
      activation: 'tanh',
    }),
  ],
];
const BACKENDS = ['cpu', 'wasm'];

const EVAL = { training: false, seed: 0 };

function input(net: Net, batch: number, seed: number): tf.Tensor {
  const shape = [batch, ...net.inputShape];
  return tf.tensor(
    randomArray(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ),
    shape,
  );
}

/** The flat per-parameter values as the per-block tensor lists `forwardBlocks` takes. */
function blockParams(net: Net, values: readonly Float32Array[]): tf.Tensor[][] {
  let i = 0;
  return net.blocks.map((b) => b.params.map((p) => tf.tensor(values[i++], [...p.shape])));
}

/** Values unlike the init (non-zero biases too), so that a transposed or misplaced tensor shows. */
function randomValues(net: Net, seed: number): Float32Array[] {
  return netParams(net).map((p, i) =>
    randomArray(
      p.shape.reduce((a, b) => a * b, 1),
      seed + i,
    ).map((v) => v * 0.5),
  );
}

function forward(net: Net, values: readonly Float32Array[], x: tf.Tensor, mode = EVAL): Float32Array {
  return tf.tidy(
    () => forwardBlocks(net, blockParams(net, values), x, mode).logits.dataSync() as Float32Array,
  );
}

/** One-hot labels cycling through the net's classes (the size of its last bias). */
function oneHotLabels(net: Net, batch: number): tf.Tensor2D {
  const classes = netParams(net).at(-1)?.shape[0] ?? 1;
  const ids = Array.from({ length: batch }, (_, i) => (i * 5) % classes);
  return tf.oneHot(tf.tensor1d(ids, 'int32'), classes) as tf.Tensor2D;
}

function predict(model: tf.LayersModel, x: tf.Tensor): Float32Array {
  return tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
}

/** FNV-1a over the bytes of every value: a fingerprint of a whole initialisation. */
function fingerprint(values: readonly Float32Array[]): string {
  let h = 0x811c9dc5;
  for (const v of values) {
    for (const byte of new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
      h = Math.imul(h ^ byte, 0x01000193);
  }
  return (h >>> 0).toString(16);
}

let tmp: string;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-net-'));
  // What a worker does on wasm: the stock kernels cannot train a CNN (no Conv2DBackpropFilter).
  installBlasKernels('wasm');
  await tf.setBackend('cpu');
});
afterAll(() => {
  uninstallBlasKernels('wasm');
  rmSync(tmp, { recursive: true, force: true });
});

describe('Net init', () => {
  it('is the seeded weights the layers builders have always drawn (checkpoints and exports keep their meaning)', () => {
    // Fingerprints of buildModel(spec, 42)'s weights from before the zoo became Nets.
    expect(fingerprint(buildNet(MLP).init(42))).toBe('ca71b091');
    expect(fingerprint(buildNet(CNN).init(42))).toBe('a3263090');
  });

  for (const [label, spec] of SPECS) {
    it(`${label}: equals the layers model's weights, parameter by parameter, in the same shapes`, () => {
      const net = buildNet(spec);
      const model = buildModel(spec, 7);
      expect(netParams(net).map((p) => p.shape)).toEqual(trainableVariables(model).map((v) => v.shape));
      expect(net.init(7)).toEqual(model.getWeights().map((w) => w.dataSync()));
      expect(net.init(7)).toEqual(net.init(7));
      expect(net.init(8)[0]).not.toEqual(net.init(7)[0]);
      model.dispose();
    });
  }
});

describe('Net blocks', () => {
  it('MLP: one dense block per layer, each exposing its output as `hidden`', () => {
    const net = buildNet(MLP);
    expect(net.kind).toBe('mlp');
    expect(net.inputShape).toEqual([20]);
    expect(netParams(net).map((p) => p.name)).toEqual([
      'dense0/kernel',
      'dense0/bias',
      'dense1/kernel',
      'dense1/bias',
      'dense2/kernel',
      'dense2/bias',
    ]);
    const x = input(net, 3, 1);
    const out = tf.tidy(() => {
      const { logits, taps } = forwardBlocks(net, blockParams(net, net.init(1)), x, EVAL);
      return {
        logits: logits.shape,
        taps: Object.fromEntries(Object.entries(taps).map(([k, v]) => [k, v.shape])),
      };
    });
    expect(out).toEqual({
      logits: [3, 4],
      taps: { 'dense0/hidden': [3, 16], 'dense1/hidden': [3, 16], 'dense2/hidden': [3, 4] },
    });
    x.dispose();
  });

  it('CNN: one block per conv block, the flatten folded into the first dense block', () => {
    const net = buildNet(CNN);
    expect(net.kind).toBe('cnn');
    expect(net.inputShape).toEqual([12, 12, 2]);
    expect(net.blocks.map((b) => b.name)).toEqual(['conv0', 'conv1', 'dense0', 'dense1']);
    const x = input(net, 2, 1);
    const shapes = tf.tidy(() => {
      const { taps } = forwardBlocks(net, blockParams(net, net.init(1)), x, EVAL);
      return Object.fromEntries(Object.entries(taps).map(([k, v]) => [k, v.shape]));
    });
    expect(shapes).toEqual({
      'conv0/hidden': [2, 6, 6, 6],
      'conv1/hidden': [2, 4, 4, 4],
      'dense0/hidden': [2, 8],
      'dense1/hidden': [2, 3],
    });
    x.dispose();
  });

  it('refuses a CNN whose conv blocks leave no pixels', () => {
    const tiny = ModelSpec.parse({
      type: 'cnn',
      input: [4, 4, 1],
      conv: [{ filters: 2, kernel: 5, padding: 'valid' }],
      classes: 2,
    });
    expect(() => buildNet(tiny)).toThrow(/conv block 0 leaves no pixels/);
  });
});

for (const backend of BACKENDS) {
  describe(`Net against its layers model on ${backend}`, () => {
    beforeAll(async () => {
      expect(await tf.setBackend(backend)).toBe(true);
    });
    afterAll(async () => {
      await tf.setBackend('cpu');
    });

    for (const [label, spec] of SPECS) {
      it(`${label}: the forward (not training) predicts what the layers model predicts`, () => {
        const net = buildNet(spec);
        const values = randomValues(net, 11);
        const model = toLayersModel(spec, values);
        const x = input(net, 5, 3);
        expectClose(forward(net, values, x), predict(model, x), 1e-5);
        model.dispose();
        x.dispose();
      });

      it(`${label}: gradients w.r.t. the parameter tensors equal the layers model's variable gradients`, () => {
        const noDropout = { ...spec, dropout: 0 };
        const net = buildNet(noDropout);
        const values = randomValues(net, 21);
        const model = toLayersModel(noDropout, values);
        const x = input(net, 6, 4);
        const labels = oneHotLabels(net, 6);
        const loss = (logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;

        const params = blockParams(net, values);
        const mode = { training: true, seed: 5 };
        const netGrads = tf.tidy(() =>
          tf
            .grads((...p: tf.Tensor[]) => {
              let k = 0;
              const perBlock = net.blocks.map((b) => b.params.map(() => p[k++]));
              return loss(forwardBlocks(net, perBlock, x, mode).logits);
            })(params.flat())
            .map((g) => g.dataSync() as Float32Array),
        );
        const variables = trainableVariables(model);
        const { value, grads } = tf.variableGrads(
          () => loss(model.apply(x, { training: true }) as tf.Tensor),
          variables,
        );
        expect(netGrads.length).toBe(variables.length);
        for (const [i, v] of variables.entries()) {
          expectClose(netGrads[i], grads[v.name].dataSync() as Float32Array, 1e-5);
        }
        tf.dispose([value, ...Object.values(grads), ...params.flat(), x, labels]);
        model.dispose();
      });
    }
  });
}

describe('Net training', () => {
  for (const [label, spec] of [
    ['MLP', MLP],
    ['CNN', CNN],
  ] as const) {
    it(`${label}: every parameter gets a gradient, and SGD steps (dropout on) lower the loss`, () => {
      const net = buildNet(spec);
      const params = blockParams(net, net.init(5)).flat();
      const x = input(net, 8, 8);
      const labels = oneHotLabels(net, 8);
      const lossAt = (p: tf.Tensor[], mode: { training: boolean; seed: number }) => {
        let k = 0;
        const perBlock = net.blocks.map((b) => b.params.map(() => p[k++]));
        return tf.losses.softmaxCrossEntropy(
          labels,
          forwardBlocks(net, perBlock, x, mode).logits,
        ) as tf.Scalar;
      };
      const evalLoss = (p: tf.Tensor[]) => tf.tidy(() => lossAt(p, EVAL).dataSync()[0]);
      const first = evalLoss(params);
      let current = params;
      for (let step = 0; step < 15; step++) {
        const mode = { training: true, seed: microBatchSeed(1, step, 0, 0) };
        const grads = tf.grads((...p: tf.Tensor[]) => lossAt(p, mode))(current);
        if (step === 0) {
          for (const g of grads) expect(tf.tidy(() => tf.norm(g).dataSync()[0])).toBeGreaterThan(0);
        }
        const next = current.map((p, i) => tf.tidy(() => tf.sub(p, tf.mul(grads[i], 0.1))));
        tf.dispose([...grads, ...current]);
        current = next;
      }
      expect(evalLoss(current)).toBeLessThan(first);
      tf.dispose([...current, x, labels]);
    });
  }
});

describe('Net dropout', () => {
  const run = (net: Net, values: Float32Array[], x: tf.Tensor, seed: number) =>
    forward(net, values, x, { training: true, seed });

  for (const [label, spec] of [
    ['MLP', MLP],
    ['CNN', CNN],
  ] as const) {
    it(`${label}: the same micro-batch seed drops the same units, another seed others; off when not training`, () => {
      const net = buildNet(spec);
      const values = randomValues(net, 31);
      const x = input(net, 8, 5);
      const seed = microBatchSeed(42, 3, 0, 0);
      expect(run(net, values, x, seed)).toEqual(run(net, values, x, seed));
      expect(run(net, values, x, seed)).not.toEqual(run(net, values, x, microBatchSeed(42, 4, 0, 0)));
      expect(run(net, values, x, seed)).not.toEqual(forward(net, values, x));
      expect(forward(net, values, x, { training: false, seed })).toEqual(forward(net, values, x));
      x.dispose();
    });
  }

  it('a block recomputed on its own (checkpointing, ZeRO-3) drops what it dropped in the full forward', () => {
    const net = buildNet(MLP);
    const values = net.init(3);
    const x = input(net, 4, 6);
    const mode = { training: true, seed: 99 };
    const [full, again] = tf.tidy(() => {
      const params = blockParams(net, values);
      const { taps } = forwardBlocks(net, params, x, mode);
      const h0 = taps['dense0/hidden'];
      const h1 = forwardBlocks(net, params.slice(1, 2), h0, mode, 1, 2).logits;
      return [taps['dense1/hidden'].dataSync(), h1.dataSync()];
    });
    expect(again).toEqual(full);
    x.dispose();
  });
});

describe('export through the layers format', () => {
  for (const [label, spec] of [
    ['MLP', MLP],
    ['CNN', CNN],
  ] as const) {
    it(`${label}: toLayersModel → saveModel → loadModel predicts what the Net computes`, async () => {
      const net = buildNet(spec);
      const values = randomValues(net, 41);
      const model = toLayersModel(spec, values);
      const dir = join(tmp, label);
      await saveModel(model, dir);
      const loaded = await loadModel(dir);
      const x = input(net, 3, 7);
      expect(predict(loaded, x)).toEqual(predict(model, x));
      expectClose(predict(loaded, x), forward(net, values, x), 1e-5);
      for (const m of [model, loaded, x]) m.dispose();
    });
  }

  it('refuses values that do not fit the model, naming the weight', () => {
    const values = buildNet(MLP).init(1);
    expect(() => toLayersModel(MLP, values.slice(1))).toThrow(/has 6 weights, 5 values/);
    expect(() => toLayersModel(MLP, [values[0].subarray(1), ...values.slice(1)])).toThrow(
      /kernel \[20, 16\] needs 320 values, got 319/,
    );
  });
});
