/**
 * What the engine trains: a network as a sequence of blocks, each a pure function of its own parameters and its
 * input. The engine owns the parameter values (flat fp32 buffers, sharded by ZeRO) and hands a block its
 * parameters as tensors when it runs it. That one contract serves every way of running a model:
 *
 *   - stage 0–2: every block's parameters as tensors for the whole step, one backward over the whole net;
 *   - ZeRO stage 3: a block's parameters gathered just before its forward, released after, gathered again for
 *     its backward (recomputing the block), its gradient reduce-scattered at once;
 *   - activation checkpointing: the same block-wise backward, keeping only the blocks' inputs;
 *   - pipeline stages: a contiguous range of blocks per worker;
 *   - distillation: blocks expose intermediate tensors (hidden states, attention maps) as named taps;
 *   - batch statistics: a block that normalises by statistics of the batch (BatchNormalization) sees those of the
 *     whole data-parallel micro-batch, summed over the ranks by the engine (SyncBN), and keeps its moving averages
 *     as buffers among its parameters.
 *
 * Models of the zoo (src/models) implement it; the engine imports nothing from them.
 */
import type * as tf from '@tensorflow/tfjs';

/** One parameter tensor of a block: a name unique within the block, and its shape. */
export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /**
   * A buffer (torch's word): state the block keeps that no gradient trains, BatchNormalization's moving mean and
   * variance. It lives in the flat parameter space, so it is sharded, checkpointed and exported like a parameter,
   * but the optimizer never moves it: only a training micro-batch's statistics do (`BatchStatistics`).
   */
  readonly buffer?: boolean;
  /**
   * Head-major: axis 0 indexes the attention heads of its block (a head's projections, its rows of the output
   * projection). Heads pruning removes head h by the slice h of every such parameter of a block.
   */
  readonly headMajor?: boolean;
}

/** How a forward pass runs: training mode turns dropout on; masks come from `seed` (deterministic). */
export interface ForwardMode {
  readonly training: boolean;
  /**
   * Seed of this micro-batch's random masks (derived from job seed, step, rank and micro-batch); a block derives
   * its own streams from it with its index. Ignored when not training.
   */
  readonly seed: number;
}

/** A block's result: its output (the next block's input) and the intermediate tensors it exposes. */
export interface BlockOutput {
  readonly y: tf.Tensor;
  /**
   * Named intermediates for objectives, e.g. `hidden` (the block's output as a hidden state) or `attention`
   * ([batch, heads, seq, seq] attention probabilities). Part of the graph: losses on them train the block.
   */
  readonly taps?: Readonly<Record<string, tf.Tensor>>;
}

/**
 * What a block that normalises by statistics of the batch declares. In training, the engine computes `local` on
 * every rank, sums it over the data-parallel ranks and hands the sum to the block's forward, so that each rank
 * normalises by the statistics of the whole micro-batch (as one process does on the N-fold micro-batch); in the
 * backward it sums the sum's gradient over the ranks as well. Each training micro-batch then moves every buffer
 * toward its target: buffer ← buffer · momentum + target · (1 − momentum), as Keras and tfjs do.
 */
export interface BatchStatistics {
  /** This rank's part (sums over its samples), a differentiable function of the block's input. */
  local(x: tf.Tensor): tf.Tensor;
  readonly momentum: number;
  /** Each buffer's target given the summed statistics, in the order of the block's buffer params. */
  targets(summed: Float32Array): Float32Array[];
}

export interface Block {
  /** Unique within the net; taps are addressed as `<block name>/<tap name>`. */
  readonly name: string;
  readonly params: readonly ParamSpec[];
  /**
   * The block's forward, pure: the same parameters, input and mode give the same output. `params` follow
   * `this.params`' order and shapes. `index` is the block's position in the net (for seeding its masks).
   * `summed`: a block with `statistics`, in training, gets its statistics summed over the ranks.
   */
  forward(
    params: readonly tf.Tensor[],
    x: tf.Tensor,
    mode: ForwardMode,
    index: number,
    summed?: tf.Tensor,
  ): BlockOutput;
  readonly statistics?: BatchStatistics;
}

/** A network the engine can train, evaluate and partition. */
export interface Net {
  /** The zoo's name for it (mlp, cnn, transformer), for reports. */
  readonly kind: string;
  /** One sample's input shape (without the batch dimension). */
  readonly inputShape: readonly number[];
  readonly inputDtype: 'float32' | 'int32';
  readonly blocks: readonly Block[];
  /**
   * The initial value of every parameter, block by block in `params` order, from `seed` alone: every rank that
   * calls it with the same seed gets the same values.
   */
  init(seed: number): Float32Array[];
}

/** Every parameter of `net` in flat order, named `<block>/<param>`. */
export function netParams(net: Net): { name: string; shape: readonly number[] }[] {
  return net.blocks.flatMap((b) => b.params.map((p) => ({ name: `${b.name}/${p.name}`, shape: p.shape })));
}

/** Number of scalar parameters of `net`. */
export function countParams(net: Net): number {
  return netParams(net).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/** What a full forward pass of the net returns: the last block's output and every block's taps by full name. */
export interface NetOutput {
  readonly logits: tf.Tensor;
  readonly taps: Readonly<Record<string, tf.Tensor>>;
}

/** Whether training `net` needs statistics summed over the ranks inside its forward. */
export function hasBatchStatistics(net: Pick<Net, 'blocks'>): boolean {
  return net.blocks.some((b) => b.statistics !== undefined);
}

/**
 * Runs blocks [from, to) of `net` on `x` with `params` (one array per block, in block order from `from`),
 * collecting taps as `<block>/<tap>`. Differentiable: call it inside a gradient function for a one-pass backward.
 * `summed` holds, by block index, the summed statistics of the training forward's statistics blocks.
 */
export function forwardBlocks(
  net: Net,
  params: readonly (readonly tf.Tensor[])[],
  x: tf.Tensor,
  mode: ForwardMode,
  from = 0,
  to = net.blocks.length,
  summed?: ReadonlyMap<number, tf.Tensor>,
): NetOutput {
  const taps: Record<string, tf.Tensor> = {};
  let h = x;
  for (let i = from; i < to; i++) {
    const block = net.blocks[i];
    const out = block.forward(params[i - from], h, mode, i, summed?.get(i));
    for (const [k, v] of Object.entries(out.taps ?? {})) taps[`${block.name}/${k}`] = v;
    h = out.y;
  }
  return { logits: h, taps };
}
