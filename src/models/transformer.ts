/**
 * A Transformer encoder classifier as a Net: an embedding block, `layers` encoder blocks, a head block.
 *
 * Post-LN (BERT's layout: residual add, then layer norm) rather than pre-LN. Pre-LN trains deep stacks without
 * warmup, but at the depths distilled here (1–6 layers) post-LN trains as well with the schedulers' warmup, and
 * it is what TextBrewer's hidden-state matches were designed on: every block's output (tap `hidden`) is
 * layer-normalised, so a 4-layer teacher's and a 1-layer student's hidden states have the same scale and MSE
 * or cosine between them means the same at every layer. Pre-LN's residual stream grows with depth instead.
 *
 * The token embedding is a one-hot matmul, not `tf.gather`: on the wasm backend the stock GatherV2 runs at
 * ~40 ns per element (40 ms for 8192 × 128 values) and its gradient needs UnsortedSegmentSum, which wasm lacks;
 * at vocabularies of tens of tokens the one-hot GEMM is 5× faster forward + backward (measured at batch 64,
 * 32 tokens, vocab 32, dim 64 with the BLAS kernels: 1.2 ms against 6.2 ms). Past a few hundred tokens
 * `tf.gather` wins (src/backend/kernels supplies its gradient on wasm).
 */
import { tf } from '../backend/tf.ts';
import { glorotUniform } from '../base/init.ts';
import { deriveSeed, Rng } from '../base/rng.ts';
import type { TransformerSpec } from '../config/transformer.ts';
import type { Block, BlockOutput, Net, ParamSpec } from '../engine/net.ts';
import { blockDropout } from './dropout.ts';

/** Purpose tag of the Transformer's init streams (see `deriveSeed`). */
const INIT_STREAM = 0x7f0e;

/** BERT's initialiser scale for embeddings. */
const EMBEDDING_STD = 0.02;

const LAYER_NORM_EPSILON = 1e-5;

/** How a parameter starts: Glorot-uniform (a dense kernel [in, out]), N(0, 0.02²), zeros or ones. */
type Init = 'glorot' | 'embedding' | 'zeros' | 'ones';

interface TransformerParam extends ParamSpec {
  readonly init: Init;
  /** Glorot's fans when the kernel is not [in, out]. */
  readonly fans?: readonly [number, number];
}

function param(
  name: string,
  shape: readonly number[],
  init: Init,
  fans?: readonly [number, number],
): TransformerParam {
  return { name, shape, init, fans };
}

/** A parameter whose axis 0 is the block's heads (see ParamSpec.headMajor). */
function headParam(
  name: string,
  shape: readonly number[],
  init: Init,
  fans?: readonly [number, number],
): TransformerParam {
  return { ...param(name, shape, init, fans), headMajor: true };
}

function layerNormParams(prefix: string, dim: number): TransformerParam[] {
  return [param(`${prefix}_gamma`, [dim], 'ones'), param(`${prefix}_beta`, [dim], 'zeros')];
}

/** Normalises over the last axis, then scales and shifts per feature. */
function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, LAYER_NORM_EPSILON))), gamma), beta);
}

/**
 * GELU as x·σ(1.702x) (Hendrycks & Gimpel's sigmoid form, within 0.02 of the erf form): three kernels where the
 * tanh form takes seven, and the wasm backend has no Erf.
 */
function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

/** x [..., in] · kernel [in, out] + bias, as one fused kernel over the flattened leading axes. */
function dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const shape = x.shape;
  const inner = shape[shape.length - 1];
  const y = tf.fused.matMul({ a: tf.reshape(x, [-1, inner]) as tf.Tensor2D, b: kernel as tf.Tensor2D, bias });
  return tf.reshape(y, [...shape.slice(0, -1), kernel.shape[1] as number]);
}

/** A Block whose parameters carry their initialiser (the net's `init` reads it). */
interface TransformerBlock extends Block {
  readonly params: readonly TransformerParam[];
}

function embeddingBlock(spec: TransformerSpec): TransformerBlock {
  const { vocab, seq_len: seqLen, dim } = spec;
  return {
    name: 'embeddings',
    params: [
      param('token', [vocab, dim], 'embedding'),
      param('position', [seqLen, dim], 'embedding'),
      ...layerNormParams('ln', dim),
    ],
    forward([token, position, gamma, beta], x, mode, index): BlockOutput {
      if (x.rank !== 2 || x.shape[1] !== seqLen) {
        throw new Error(`transformer: expected token ids [batch, ${seqLen}], got [${x.shape}]`);
      }
      const batch = x.shape[0];
      // Data loaders hold ids as float values (exact below 2^24); the one-hot needs them as int32.
      const ids = x.dtype === 'int32' ? x : tf.cast(x, 'int32');
      const oneHot = tf.oneHot(tf.reshape(ids, [-1]), vocab);
      const tokens = tf.reshape(tf.matMul(oneHot, token), [batch, seqLen, dim]);
      const h = layerNorm(tf.add(tokens, position), gamma, beta);
      const y = blockDropout(h, spec.dropout, mode, index);
      return { y, taps: { hidden: y } };
    },
  };
}

function encoderBlock(spec: TransformerSpec, layer: number): TransformerBlock {
  const { dim, ffn, seq_len: seqLen } = spec;
  // The head size is the spec's; heads pruning leaves a layer fewer of them.
  const headDim = dim / spec.heads;
  const heads = spec.layer_heads?.[layer] ?? spec.heads;
  const scale = 1 / Math.sqrt(headDim);
  return {
    name: `layer${layer}`,
    params: [
      // Per head: [heads, dim, headDim] is a [dim, dim] dense kernel cut by output columns, head-major.
      headParam('query_kernel', [heads, dim, headDim], 'glorot', [dim, dim]),
      headParam('query_bias', [heads, headDim], 'zeros'),
      headParam('key_kernel', [heads, dim, headDim], 'glorot', [dim, dim]),
      headParam('key_bias', [heads, headDim], 'zeros'),
      headParam('value_kernel', [heads, dim, headDim], 'glorot', [dim, dim]),
      headParam('value_bias', [heads, headDim], 'zeros'),
      // [heads, headDim, dim]: a [dim, dim] dense kernel cut by input rows.
      headParam('out_kernel', [heads, headDim, dim], 'glorot', [dim, dim]),
      param('out_bias', [dim], 'zeros'),
      ...layerNormParams('attention_ln', dim),
      param('ffn_in_kernel', [dim, ffn], 'glorot'),
      param('ffn_in_bias', [ffn], 'zeros'),
      param('ffn_out_kernel', [ffn, dim], 'glorot'),
      param('ffn_out_bias', [dim], 'zeros'),
      ...layerNormParams('ffn_ln', dim),
    ],
    forward(params, x, mode, index): BlockOutput {
      const [qKernel, qBias, kKernel, kBias, vKernel, vBias, outKernel, outBias, ln1Gamma, ln1Beta] = params;
      const [inKernel, inBias, ffnOutKernel, ffnOutBias, ln2Gamma, ln2Beta] = params.slice(10);
      const batch = x.shape[0];
      const rows = tf.reshape(x, [batch * seqLen, dim]);
      // Head by head rather than one [batch, seq, heads, headDim] tensor transposed to [batch, heads, …]: the
      // wasm backend's Transpose of rank 4 and 5 is its slowest kernel by far (10–200 ms at these sizes, half
      // of a training step), and heads sliced from head-major parameters need no transpose at all.
      const [qk, qb, kk, kb, vk, vb, ok] = [qKernel, qBias, kKernel, kBias, vKernel, vBias, outKernel].map(
        (p) => tf.unstack(p),
      );
      const probabilities: tf.Tensor[] = [];
      let attended: tf.Tensor | undefined;
      for (let h = 0; h < heads; h++) {
        // Bias added apart, not fused: the stock wasm _FusedMatMul checks the rank of the bias's storage, which
        // for a slice of the [heads, headDim] bias is the whole parameter's, and refuses it.
        const project = (kernel: tf.Tensor, bias: tf.Tensor) =>
          tf.reshape(tf.add(tf.matMul(rows, kernel), bias), [batch, seqLen, headDim]);
        const q = project(qk[h], qb[h]);
        const k = project(kk[h], kb[h]);
        const v = project(vk[h], vb[h]);
        const p = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale));
        probabilities.push(p);
        const context = tf.matMul(blockDropout(p, spec.dropout, mode, index, h), v);
        const part = tf.matMul(tf.reshape(context, [batch * seqLen, headDim]), ok[h]);
        attended = attended === undefined ? part : tf.add(attended, part);
      }
      const attention = tf.stack(probabilities, 1);
      const projected = tf.add(tf.reshape(attended as tf.Tensor, [batch, seqLen, dim]), outBias);
      const h1 = layerNorm(
        tf.add(x, blockDropout(projected, spec.dropout, mode, index, heads)),
        ln1Gamma,
        ln1Beta,
      );
      const inner = gelu(dense(h1, inKernel, inBias));
      const out = blockDropout(dense(inner, ffnOutKernel, ffnOutBias), spec.dropout, mode, index, heads + 1);
      const y = layerNorm(tf.add(h1, out), ln2Gamma, ln2Beta);
      return { y, taps: { hidden: y, attention } };
    },
  };
}

function headBlock(spec: TransformerSpec): TransformerBlock {
  const { dim, classes } = spec;
  return {
    name: 'head',
    params: [param('kernel', [dim, classes], 'glorot'), param('bias', [classes], 'zeros')],
    forward([kernel, bias], x): BlockOutput {
      const pooled =
        spec.pool === 'mean'
          ? tf.mean(x, 1)
          : tf.reshape(tf.slice(x, [0, 0, 0], [x.shape[0], 1, dim]), [x.shape[0], dim]);
      return { y: dense(pooled, kernel, bias) };
    },
  };
}

function initParam(p: TransformerParam, rng: Rng): Float32Array {
  const size = p.shape.reduce((a, b) => a * b, 1);
  switch (p.init) {
    case 'glorot':
      return glorotUniform(p.fans?.[0] ?? p.shape[0], p.fans?.[1] ?? p.shape[1], rng, size);
    case 'embedding':
      return normal(size, EMBEDDING_STD, rng);
    case 'zeros':
      return new Float32Array(size);
    case 'ones':
      return new Float32Array(size).fill(1);
  }
}

/** N(0, std²) by Box–Muller, from our seeded stream (tfjs' randomNormal is per-backend state). */
function normal(size: number, std: number, rng: Rng): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng.next())) * std;
    const theta = 2 * Math.PI * rng.next();
    out[i] = r * Math.cos(theta);
    if (i + 1 < size) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

/**
 * The Transformer of `spec` as a Net (kind `transformer`): blocks `embeddings` (tap `hidden`), `layer0` …
 * `layer{N-1}` (taps `hidden` [batch, seq, dim] and `attention` [batch, heads, seq, seq], the softmax
 * probabilities before dropout) and `head` (logits [batch, classes]). Input: token ids [batch, seq_len], int32
 * (float ids are cast). Each parameter draws from its own stream deriveSeed(seed, stream, block, param).
 */
export function transformerNet(spec: TransformerSpec): Net {
  const blocks: TransformerBlock[] = [
    embeddingBlock(spec),
    ...Array.from({ length: spec.layers }, (_, i) => encoderBlock(spec, i)),
    headBlock(spec),
  ];
  return {
    kind: 'transformer',
    inputShape: [spec.seq_len],
    inputDtype: 'int32',
    blocks,
    init: (seed) =>
      blocks.flatMap((block, b) =>
        block.params.map((p, i) => initParam(p, new Rng(deriveSeed(seed, INIT_STREAM, b, i)))),
      ),
  };
}
