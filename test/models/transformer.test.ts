import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { installKernels } from '../../src/backend/kernels/index.ts';
import { Rng } from '../../src/base/rng.ts';
import { TransformerSpec } from '../../src/config/transformer.ts';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { generateSeqCls, SeqClsSpec } from '../../src/data/sequence-task.ts';
import type { ForwardMode, Net } from '../../src/engine/net.ts';
import { countParams, forwardBlocks } from '../../src/engine/net.ts';
import { transformerNet } from '../../src/models/transformer.ts';

const spec = TransformerSpec.parse({
  type: 'transformer',
  vocab: 12,
  seq_len: 6,
  dim: 8,
  heads: 2,
  layers: 2,
  ffn: 16,
  classes: 3,
  dropout: 0.2,
});
const BATCH = 4;

function tensors(net: Net, values: readonly Float32Array[]): tf.Tensor[][] {
  let at = 0;
  return net.blocks.map((b) => b.params.map((p) => tf.tensor(values[at++], p.shape as number[])));
}

function tokenIds(batch: number, seed: number, vocab = spec.vocab, seqLen = spec.seq_len): tf.Tensor2D {
  const rng = new Rng(seed);
  return tf.tensor2d(
    Array.from({ length: batch * seqLen }, () => rng.nextInt(vocab)),
    [batch, seqLen],
    'int32',
  );
}

/** Every parameter's gradient (flat order) of the summed, weighted logits and a loss on every tap. */
function gradients(net: Net, values: readonly Float32Array[], mode: ForwardMode): Float32Array[] {
  return tf
    .tidy(() => {
      const params = tensors(net, values);
      const ids = tokenIds(BATCH, 5);
      const weights = tf.linspace(-1, 1, BATCH * spec.classes).reshape([BATCH, spec.classes]);
      const flat = params.flat();
      const grads = tf.grads((...xs: tf.Tensor[]) => {
        let at = 0;
        const blockParams = net.blocks.map((b) => b.params.map(() => xs[at++]));
        const out = forwardBlocks(net, blockParams, ids, mode);
        const taps = Object.values(out.taps).map((t) => tf.mean(tf.square(t)));
        return tf.addN([tf.sum(tf.mul(out.logits, weights)), ...taps]) as tf.Scalar;
      })(flat);
      return grads;
    })
    .map((g) => g.dataSync() as Float32Array);
}

describe('Transformer net', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('refuses a dim that heads do not divide, and unknown keys', () => {
    const bad = TransformerSpec.safeParse({ ...spec, dim: 10, heads: 3 });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0].path).toEqual(['dim']);
    expect(TransformerSpec.safeParse({ ...spec, width: 4 }).success).toBe(false);
    expect(TransformerSpec.parse({ ...spec, dropout: undefined, pool: undefined })).toMatchObject({
      dropout: 0,
      pool: 'mean',
    });
  });

  it('has an embedding block, one block per layer and a head, with their parameters', () => {
    const net = transformerNet(spec);
    expect(net.kind).toBe('transformer');
    expect(net.inputShape).toEqual([6]);
    expect(net.inputDtype).toBe('int32');
    expect(net.blocks.map((b) => b.name)).toEqual(['embeddings', 'layer0', 'layer1', 'head']);
    const { dim, ffn, vocab, classes } = spec;
    const embedding = vocab * dim + 6 * dim + 2 * dim;
    const layer = 4 * dim * dim + 4 * dim + 2 * dim + dim * ffn + ffn + ffn * dim + dim + 2 * dim;
    expect(countParams(net)).toBe(embedding + 2 * layer + dim * classes + classes);
  });

  it('initialises from the seed alone, each parameter from its own stream', () => {
    const net = transformerNet(spec);
    const a = net.init(11);
    const b = net.init(11);
    const c = net.init(12);
    expect(a).toEqual(b);
    expect(a[0]).not.toEqual(c[0]);
    const names = net.blocks.flatMap((blk) => blk.params.map((p) => `${blk.name}/${p.name}`));
    const at = (name: string) => a[names.indexOf(name)];
    // Embeddings small normal (std 0.02), layer norms identity, biases zero, kernels Glorot.
    const token = at('embeddings/token');
    const std = Math.sqrt(token.reduce((s, v) => s + v * v, 0) / token.length);
    expect(std).toBeGreaterThan(0.014);
    expect(std).toBeLessThan(0.026);
    expect(at('embeddings/ln_gamma').every((v) => v === 1)).toBe(true);
    expect(at('layer0/query_bias').every((v) => v === 0)).toBe(true);
    const limit = Math.sqrt(6 / (8 + 8));
    expect(Math.max(...at('layer0/query_kernel').map(Math.abs))).toBeLessThanOrEqual(limit);
    expect(at('layer0/query_kernel')).not.toEqual(at('layer0/key_kernel'));
    expect(at('layer0/query_kernel')).not.toEqual(at('layer1/query_kernel'));
  });

  it('exposes hidden states and attention maps of the documented shapes; attention rows sum to 1', () => {
    const net = transformerNet(spec);
    tf.tidy(() => {
      const out = forwardBlocks(net, tensors(net, net.init(1)), tokenIds(BATCH, 1), {
        training: false,
        seed: 0,
      });
      expect(out.logits.shape).toEqual([BATCH, 3]);
      expect(Object.keys(out.taps).sort()).toEqual([
        'embeddings/hidden',
        'layer0/attention',
        'layer0/hidden',
        'layer1/attention',
        'layer1/hidden',
      ]);
      for (const name of ['embeddings/hidden', 'layer0/hidden', 'layer1/hidden']) {
        expect(out.taps[name].shape).toEqual([BATCH, 6, 8]);
      }
      for (const name of ['layer0/attention', 'layer1/attention']) {
        const attention = out.taps[name];
        expect(attention.shape).toEqual([BATCH, 2, 6, 6]);
        const rows = tf.sum(attention, -1).dataSync();
        for (const r of rows) expect(r).toBeCloseTo(1, 5);
        expect(tf.min(attention).dataSync()[0]).toBeGreaterThanOrEqual(0);
      }
      // Post-LN: every hidden state is normalised per position (zero mean, unit variance at init).
      const { mean, variance } = tf.moments(out.taps['layer1/hidden'], -1);
      expect(Math.max(...tf.abs(mean).dataSync())).toBeLessThan(1e-5);
      expect(Math.min(...variance.dataSync())).toBeGreaterThan(0.99);
    });
  });

  it('takes token ids held as float values (as the data loaders hold them) like int32 ids', () => {
    const net = transformerNet(spec);
    tf.tidy(() => {
      const params = tensors(net, net.init(2));
      const ids = tokenIds(BATCH, 3);
      const mode = { training: false, seed: 0 };
      const asInt = forwardBlocks(net, params, ids, mode).logits.dataSync();
      const asFloat = forwardBlocks(net, params, tf.cast(ids, 'float32'), mode).logits.dataSync();
      expect(asFloat).toEqual(asInt);
    });
  });

  it('drops the same units for the same mode.seed (recompute included), others for another seed', () => {
    const net = transformerNet(spec);
    tf.tidy(() => {
      const params = tensors(net, net.init(3));
      const ids = tokenIds(BATCH, 4);
      const run = (mode: ForwardMode) => forwardBlocks(net, params, ids, mode);
      const a = run({ training: true, seed: 99 });
      const b = run({ training: true, seed: 99 });
      const c = run({ training: true, seed: 100 });
      const inference = run({ training: false, seed: 99 });
      expect(a.logits.dataSync()).toEqual(b.logits.dataSync());
      for (const name of Object.keys(a.taps)) {
        expect(a.taps[name].dataSync()).toEqual(b.taps[name].dataSync());
      }
      expect(a.logits.dataSync()).not.toEqual(c.logits.dataSync());
      expect(a.logits.dataSync()).not.toEqual(inference.logits.dataSync());
      // Inference ignores the seed.
      expect(run({ training: false, seed: 5 }).logits.dataSync()).toEqual(inference.logits.dataSync());
      // Dropout on the attention probabilities, not on the tapped maps: the taps stay distributions.
      for (const r of tf.sum(a.taps['layer0/attention'], -1).dataSync()) expect(r).toBeCloseTo(1, 5);
    });
  });

  it('runs block by block (a recomputed range) exactly as in one pass', () => {
    const net = transformerNet(spec);
    tf.tidy(() => {
      const params = tensors(net, net.init(4));
      const ids = tokenIds(BATCH, 6);
      const mode = { training: true, seed: 1234 };
      const whole = forwardBlocks(net, params, ids, mode);
      let h: tf.Tensor = ids;
      const taps: Record<string, tf.Tensor> = {};
      for (let i = 0; i < net.blocks.length; i++) {
        const part = forwardBlocks(net, params.slice(i, i + 1), h, mode, i, i + 1);
        Object.assign(taps, part.taps);
        h = part.logits;
      }
      expect(h.dataSync()).toEqual(whole.logits.dataSync());
      for (const name of Object.keys(whole.taps)) {
        expect(taps[name].dataSync()).toEqual(whole.taps[name].dataSync());
      }
    });
  });

  it('has finite gradients, the same on cpu and wasm to 1e-4, through dropout and the embedding', async () => {
    const net = transformerNet(spec);
    const values = net.init(8);
    const mode = { training: true, seed: 77 };
    const onCpu = gradients(net, values, mode);
    await tf.setBackend('wasm');
    installKernels('wasm');
    const onWasm = gradients(net, values, mode);
    await tf.setBackend('cpu');
    const names = net.blocks.flatMap((b) => b.params.map((p) => `${b.name}/${p.name}`));
    expect(onWasm.length).toBe(names.length);
    names.forEach((name, i) => {
      expect(onCpu[i].every(Number.isFinite), name).toBe(true);
      const scale = Math.max(1, ...onCpu[i].map(Math.abs));
      const worst = Math.max(...onCpu[i].map((v, j) => Math.abs(v - onWasm[i][j])));
      expect(worst / scale, name).toBeLessThan(1e-4);
    });
    // The embedding is trained: the rows of the tokens in the batch get gradients, the others none.
    const token = onCpu[names.indexOf('embeddings/token')];
    const used = new Set(tokenIds(BATCH, 5).dataSync());
    for (let t = 0; t < spec.vocab; t++) {
      const row = token.subarray(t * spec.dim, (t + 1) * spec.dim);
      expect(row.some((v) => v !== 0)).toBe(used.has(t));
    }
  });

  it("supplies wasm's missing UnsortedSegmentSum: tf.gather's gradient equals the cpu backend's", async () => {
    const table = tf.tensor2d(
      Array.from({ length: 7 * 5 }, (_, i) => Math.sin(i)),
      [7, 5],
    );
    const ids = tf.tensor2d([3, 0, 3, 6, 1, 3], [2, 3], 'int32');
    const dy = tf.tensor3d(
      Array.from({ length: 2 * 3 * 5 }, (_, i) => Math.cos(i)),
      [2, 3, 5],
    );
    const grad = () => tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), dy)))(table));
    // Ids outside [0, numSegments) are dropped, as on the cpu backend.
    const direct = () =>
      tf.unsortedSegmentSum(
        tf.reshape(dy, [6, 5]),
        tf.tensor1d([2, -1, 2, 9, 0, 1], 'int32'),
        4,
      ) as tf.Tensor;
    const onCpu = [grad().dataSync(), direct().dataSync(), direct().shape];
    await tf.setBackend('wasm');
    installKernels('wasm');
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
    const onWasm = [grad().dataSync(), direct().dataSync(), direct().shape];
    await tf.setBackend('cpu');
    expect(onWasm[2]).toEqual([4, 5]);
    expect(onWasm[2]).toEqual(onCpu[2]);
    for (const k of [0, 1]) {
      const [a, b] = [onCpu[k] as Float32Array, onWasm[k] as Float32Array];
      for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i], 5);
    }
  });

  it('learns the seqcls task well above chance in 200 Adam steps', async () => {
    await tf.setBackend('wasm');
    installKernels('wasm');
    const [vocab, seqLen, classes, testSize] = [8, 6, 3, 600];
    const data = generateSeqCls(
      SeqClsSpec.parse({
        dataset: 'seqcls',
        vocab,
        seq_len: seqLen,
        classes,
        train_size: 2400,
        test_size: testSize,
      }),
    );
    const net = transformerNet(
      TransformerSpec.parse({
        type: 'transformer',
        vocab,
        seq_len: seqLen,
        dim: 32,
        heads: 2,
        layers: 1,
        ffn: 64,
        classes,
        dropout: 0,
      }),
    );
    const values = net.init(1);
    let at = 0;
    const vars = net.blocks.map((b) =>
      b.params.map((p) => tf.variable(tf.tensor(values[at++], p.shape as number[]))),
    );
    const optimizer = tf.train.adam(5e-3);
    const rng = new Rng(3);
    const batch = 32;
    let order = rng.permutation(data.train.length);
    for (let step = 0, from = 0; step < 200; step++, from += batch) {
      if (from + batch > order.length) [order, from] = [rng.permutation(data.train.length), 0];
      const { inputs, labels } = gatherBatch(data.train, order, from, batch);
      tf.tidy(() => {
        const x = tf.tensor2d(inputs, [batch, seqLen], 'int32');
        const y = tf.oneHot(tf.tensor1d(labels, 'int32'), classes);
        const loss = () =>
          tf.losses.softmaxCrossEntropy(
            y,
            forwardBlocks(net, vars, x, { training: true, seed: step }).logits,
          );
        optimizer.minimize(loss as () => tf.Scalar, false, vars.flat());
      });
    }
    const test = gatherBatch(
      data.test,
      Array.from({ length: testSize }, (_, i) => i),
      0,
      testSize,
    );
    const accuracy = tf.tidy(() => {
      const x = tf.tensor2d(test.inputs, [testSize, seqLen], 'int32');
      const logits = forwardBlocks(net, vars, x, { training: false, seed: 0 }).logits;
      const hits = tf.equal(tf.argMax(logits, 1), tf.tensor1d(test.labels, 'int32'));
      return tf.mean(tf.cast(hits, 'float32')).dataSync()[0];
    });
    optimizer.dispose();
    for (const v of vars.flat()) v.dispose();
    await tf.setBackend('cpu');
    // Chance is 1/3.
    expect(accuracy).toBeGreaterThan(0.8);
  });
});
