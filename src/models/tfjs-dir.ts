/**
 * A TensorFlow.js layers model of the user's own (a directory holding `model.json` and its weight files, as
 * `model.save` or `tensorflowjs_converter` writes it) as a Net: each layer becomes a block named after the layer,
 * computing what the layer computes, with the model's saved weights as the initial values. Sequential models and
 * functional graphs with branches (Add, Concatenate, …; one input, one output, no shared layers: see
 * tfjs-graph.ts) are read; a layer kd-launch cannot run is refused by name.
 *
 * BatchNormalization trains as SyncBN: every rank normalises by the statistics of the whole data-parallel
 * micro-batch (the engine sums them over the ranks), so world N equals one process on the N-fold micro-batch, and
 * the moving mean and variance (buffers: the same on every rank) move as tfjs moves them, by the biased batch
 * variance with the layer's momentum. They are exported with the trained weights.
 *
 * The Net outputs logits: a final softmax (a Dense's activation, or an Activation / Softmax layer) is left out of
 * the forward and kept in the exported model, whose `model.json` is the user's topology with the trained weights.
 */
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tf } from '../backend/tf.ts';
import type { BatchStatistics, Block, BlockOutput, Net, ParamSpec } from '../engine/net.ts';
import { blockDropout } from './dropout.ts';
import {
  GraphError,
  type GraphNode,
  type LayerGraph,
  type LayerJson,
  layerGraph,
  layerName,
  liveSets,
  pack,
  type TensorShapes,
  unpack,
} from './tfjs-graph.ts';

/** A layer kd-launch cannot train, or a model.json it cannot read. */
export class TfjsModelError extends Error {
  constructor(
    readonly dir: string,
    message: string,
  ) {
    super(message);
    this.name = 'TfjsModelError';
  }
}

interface WeightSpec {
  readonly name: string;
  readonly shape: number[];
  readonly dtype?: string;
  readonly quantization?: unknown;
}

interface ModelJson {
  readonly modelTopology: Record<string, unknown>;
  readonly weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  readonly [key: string]: unknown;
}

/** A user's model directory read: the Net, its saved weights (`netParams` order) and what export rewrites. */
export interface TfjsModel {
  readonly net: Net;
  readonly values: Float32Array[];
  /** The directory's model.json, parsed. */
  readonly json: ModelJson;
  /** Each Net parameter's name in the weights manifest, in `netParams` order. */
  readonly weightNames: readonly string[];
}

type Activation = (x: tf.Tensor) => tf.Tensor;

const ACTIVATIONS: Record<string, Activation> = {
  linear: (x) => x,
  relu: (x) => tf.relu(x),
  relu6: (x) => tf.relu6(x),
  elu: (x) => tf.elu(x),
  selu: (x) => tf.selu(x),
  sigmoid: (x) => tf.sigmoid(x),
  tanh: (x) => tf.tanh(x),
  softplus: (x) => tf.softplus(x),
  softsign: (x) => tf.div(x, tf.add(1, tf.abs(x))),
  swish: (x) => tf.mul(x, tf.sigmoid(x)),
  gelu: (x) => tf.mul(x, tf.mul(0.5, tf.add(1, tf.erf(tf.div(x, Math.SQRT2))))),
  softmax: (x) => tf.softmax(x),
};

/**
 * What one layer contributes: its weights (by their manifest suffix) and its forward over its inputs (one, or
 * several for a merge layer such as Add or Concatenate).
 */
interface LayerPlan {
  readonly weights: readonly string[];
  /** A merge layer: takes two or more inputs; every other layer takes one. */
  readonly merges?: boolean;
  /** Of `weights`, those the layer keeps but no gradient trains (`ParamSpec.buffer`). */
  readonly buffers?: readonly string[];
  readonly statistics?: BatchStatistics;
  forward(
    w: readonly tf.Tensor[],
    xs: readonly tf.Tensor[],
    mode: { training: boolean; seed: number },
    index: number,
    summed?: tf.Tensor,
  ): tf.Tensor;
}

/** The activation a layer config names (default linear); `logits` drops a softmax. */
function activationOf(dir: string, layer: LayerJson, i: number, logits: boolean): Activation {
  const name = String(layer.config['activation'] ?? 'linear');
  if (logits && name === 'softmax') return ACTIVATIONS.linear;
  const fn = ACTIVATIONS[name];
  if (!fn) {
    throw new TfjsModelError(
      dir,
      `layer '${layerName(layer, i)}' (${layer.class_name}) has activation '${name}', which kd-launch does not run (${Object.keys(ACTIVATIONS).join(', ')})`,
    );
  }
  return fn;
}

const pair = (v: unknown, fallback: [number, number]): [number, number] => {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2) return [Number(v[0]), Number(v[1])];
  return fallback;
};

const padding = (v: unknown): 'valid' | 'same' => (v === 'same' ? 'same' : 'valid');

/** Dense over the last axis, as tfjs-layers applies it to inputs of any rank. */
function dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | undefined): tf.Tensor {
  const [inDim, units] = kernel.shape;
  const flat = x.rank === 2 ? x : tf.reshape(x, [-1, inDim]);
  let y = tf.matMul(flat as tf.Tensor2D, kernel as tf.Tensor2D);
  if (bias) y = tf.add(y, bias);
  return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), units]);
}

function planLayer(dir: string, layer: LayerJson, i: number, last: boolean): LayerPlan {
  const c = layer.config;
  const name = layerName(layer, i);
  const refuse = (why: string) => new TfjsModelError(dir, `layer '${name}' (${layer.class_name}) ${why}`);
  if (c['data_format'] === 'channels_first')
    throw refuse('is channels_first: kd-launch runs channels_last (NHWC)');
  switch (layer.class_name) {
    case 'Dense': {
      const act = activationOf(dir, layer, i, last);
      const bias = c['use_bias'] !== false;
      return {
        weights: bias ? ['kernel', 'bias'] : ['kernel'],
        forward: (w, [x]) => act(dense(x, w[0], w[1])),
      };
    }
    case 'Conv2D': {
      const act = activationOf(dir, layer, i, last);
      const bias = c['use_bias'] !== false;
      const strides = pair(c['strides'], [1, 1]);
      const dilations = pair(c['dilation_rate'], [1, 1]);
      return {
        weights: bias ? ['kernel', 'bias'] : ['kernel'],
        forward: (w, [x]) => {
          let y = tf.conv2d(
            x as tf.Tensor4D,
            w[0] as tf.Tensor4D,
            strides,
            padding(c['padding']),
            'NHWC',
            dilations,
          );
          if (w[1]) y = tf.add(y, w[1]);
          return act(y);
        },
      };
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const size = pair(c['pool_size'], [2, 2]);
      const strides = pair(c['strides'], size);
      const pool = layer.class_name === 'MaxPooling2D' ? tf.maxPool : tf.avgPool;
      return {
        weights: [],
        forward: (_, [x]) => pool(x as tf.Tensor4D, size, strides, padding(c['padding'])),
      };
    }
    case 'GlobalAveragePooling2D':
      return { weights: [], forward: (_, [x]) => tf.mean(x, [1, 2]) };
    case 'GlobalMaxPooling2D':
      return { weights: [], forward: (_, [x]) => tf.max(x, [1, 2]) };
    case 'Flatten':
      return { weights: [], forward: (_, [x]) => tf.reshape(x, [x.shape[0], -1]) };
    case 'Reshape': {
      const target = (c['target_shape'] as number[] | undefined) ?? [];
      return { weights: [], forward: (_, [x]) => tf.reshape(x, [x.shape[0], ...target]) };
    }
    case 'Dropout': {
      const rate = Number(c['rate'] ?? 0);
      return { weights: [], forward: (_, [x], mode, index) => blockDropout(x, rate, mode, index) };
    }
    case 'Activation': {
      const act = activationOf(dir, layer, i, last);
      return { weights: [], forward: (_, [x]) => act(x) };
    }
    case 'Softmax':
      return { weights: [], forward: (_, [x]) => (last ? x : tf.softmax(x)) };
    case 'ReLU': {
      // Keras' ReLU(max_value, negative_slope, threshold): relu6 is max_value 6, a leaky ReLU a negative slope.
      const max = c['max_value'] ?? c['maxValue'];
      const slope = Number(c['negative_slope'] ?? 0);
      if (Number(c['threshold'] ?? 0) !== 0) throw refuse('has a threshold, which kd-launch does not run');
      return {
        weights: [],
        forward: (_, [x]) => {
          const y = slope === 0 ? tf.relu(x) : tf.leakyRelu(x, slope);
          return max == null ? y : tf.minimum(y, Number(max));
        },
      };
    }
    case 'Embedding':
      return { weights: ['embeddings'], forward: (w, [x]) => tf.gather(w[0], tf.cast(x, 'int32')) };
    case 'LayerNormalization': {
      // tfjs writes the axis it resolved when built ([rank − 1]); Keras may write -1.
      const axes = (Array.isArray(c['axis']) ? c['axis'] : [c['axis'] ?? -1]).map(Number);
      const eps = Number(c['epsilon'] ?? 1e-3);
      const scale = c['scale'] !== false;
      const center = c['center'] !== false;
      return {
        weights: [...(scale ? ['gamma'] : []), ...(center ? ['beta'] : [])],
        forward: (w, [x]) => {
          if (axes.length !== 1 || (axes[0] !== -1 && axes[0] !== x.rank - 1)) {
            throw refuse(`normalises axes [${axes.join(', ')}]: kd-launch runs the last axis only`);
          }
          const { mean, variance } = tf.moments(x, -1, true);
          let y = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps)));
          if (scale) y = tf.mul(y, w[0]);
          if (center) y = tf.add(y, w[scale ? 1 : 0]);
          return y;
        },
      };
    }
    case 'BatchNormalization':
      return batchNormalization(c, refuse);
    case 'Add':
      return merge((xs) => tf.addN([...xs]));
    case 'Subtract':
      return merge((xs) => {
        if (xs.length !== 2) throw refuse(`takes 2 inputs, not ${xs.length}`);
        return tf.sub(xs[0], xs[1]);
      });
    case 'Multiply':
      return merge((xs) => xs.reduce((a, b) => tf.mul(a, b)));
    case 'Average':
      return merge((xs) => tf.div(tf.addN([...xs]), xs.length));
    case 'Maximum':
      return merge((xs) => xs.reduce((a, b) => tf.maximum(a, b)));
    case 'Minimum':
      return merge((xs) => xs.reduce((a, b) => tf.minimum(a, b)));
    case 'Concatenate': {
      const axis = Number(c['axis'] ?? -1);
      return merge((xs) => tf.concat([...xs], axis));
    }
    default:
      throw refuse(
        'is not a layer kd-launch runs (Dense, Conv2D, MaxPooling2D, AveragePooling2D, Global*Pooling2D, Flatten, Reshape, Dropout, Activation, Softmax, ReLU, Embedding, LayerNormalization, BatchNormalization, Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate)',
      );
  }
}

function merge(fn: (xs: readonly tf.Tensor[]) => tf.Tensor): LayerPlan {
  return { weights: [], merges: true, forward: (_, xs) => fn(xs) };
}

/**
 * BatchNormalization over the last axis (see the module comment). Its statistics are [Σx, Σx², count] per
 * channel; the mean and the biased variance follow from their sums over the ranks.
 */
function batchNormalization(c: LayerJson['config'], refuse: (why: string) => TfjsModelError): LayerPlan {
  const axis = Array.isArray(c['axis']) ? c['axis'].map(Number) : [Number(c['axis'] ?? -1)];
  if (c['renorm'] === true) throw refuse('uses batch renormalization, which kd-launch does not run');
  if (c['virtual_batch_size'] != null)
    throw refuse('uses a virtual batch size, which kd-launch does not run');
  const eps = Number(c['epsilon'] ?? 1e-3);
  const momentum = Number(c['momentum'] ?? 0.99);
  const scale = c['scale'] !== false;
  const center = c['center'] !== false;
  const channels = (x: tf.Tensor): number => {
    if (axis.length !== 1 || (axis[0] !== -1 && axis[0] !== x.rank - 1)) {
      throw refuse(
        `normalises axis ${JSON.stringify(c['axis'])}: kd-launch runs the last (channels) axis only`,
      );
    }
    return x.shape[x.rank - 1];
  };
  /** Mean and biased variance per channel from the summed statistics. */
  const moments = (summed: tf.Tensor, n: number) => {
    const count = tf.slice(summed, [2 * n], [1]);
    const mean = tf.div(tf.slice(summed, [0], [n]), count);
    const variance = tf.sub(tf.div(tf.slice(summed, [n], [n]), count), tf.square(mean));
    return { mean, variance };
  };
  return {
    weights: [...(scale ? ['gamma'] : []), ...(center ? ['beta'] : []), 'moving_mean', 'moving_variance'],
    buffers: ['moving_mean', 'moving_variance'],
    statistics: {
      momentum,
      local: (x) => {
        const n = channels(x);
        const flat = tf.reshape(x, [-1, n]);
        return tf.concat([tf.sum(flat, 0), tf.sum(tf.square(flat), 0), tf.fill([1], flat.shape[0])]);
      },
      targets: (summed) => {
        const n = (summed.length - 1) / 2;
        const count = summed[2 * n];
        const mean = summed.map((v) => v / count).subarray(0, n);
        const variance = new Float32Array(n).map((_, i) => summed[n + i] / count - mean[i] * mean[i]);
        return [mean, variance];
      },
    },
    forward: (w, [x], mode, _index, summed) => {
      const n = channels(x);
      const moving = w.length - 2;
      let mean = w[moving];
      let variance = w[moving + 1];
      if (mode.training) {
        if (!summed)
          throw refuse('needs the batch statistics in training (the engine sums them over the ranks)');
        ({ mean, variance } = moments(summed, n));
      }
      let y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
      if (scale) y = tf.mul(y, w[0]);
      if (center) y = tf.add(y, w[scale ? 1 : 0]);
      return y;
    },
  };
}

/** The weight files of the manifest, each weight's values by name. */
function readWeights(dir: string, json: ModelJson): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const group of json.weightsManifest ?? []) {
    const bytes = Buffer.concat(group.paths.map((p) => readFileSync(join(dir, p))));
    let at = 0;
    for (const w of group.weights) {
      if ((w.dtype ?? 'float32') !== 'float32' || w.quantization !== undefined) {
        throw new TfjsModelError(
          dir,
          `weight '${w.name}' is ${w.quantization ? 'quantized' : w.dtype}: kd-launch trains float32 weights`,
        );
      }
      const size = w.shape.reduce((a, b) => a * b, 1);
      if (at + size * 4 > bytes.length) {
        throw new TfjsModelError(
          dir,
          `the weight files hold ${bytes.length} bytes, the manifest asks for more at '${w.name}'`,
        );
      }
      const values = new Float32Array(size);
      new Uint8Array(values.buffer).set(bytes.subarray(at, at + size * 4));
      out.set(w.name, values);
      at += size * 4;
    }
  }
  return out;
}

/** The batch input shape the first layer declares, without its batch dimension. */
function inputShapeOf(dir: string, graph: LayerGraph): { shape: number[]; dtype: 'float32' | 'int32' } {
  const declared = (graph.first.config['batch_input_shape'] ?? graph.first.config['batch_shape']) as
    | (number | null)[]
    | undefined;
  const shape = declared?.slice(1);
  if (!shape || shape.some((d) => typeof d !== 'number' || d < 1)) {
    throw new TfjsModelError(
      dir,
      `the model's input shape is not fully known (${JSON.stringify(declared ?? null)}): give every dimension but the batch`,
    );
  }
  const embeds = graph.nodes.some((n) => n.layer.class_name === 'Embedding' && n.inputs[0] === graph.input);
  // Keras 3 writes a dtype policy ({class_name: 'DTypePolicy', config: {name}}) where tfjs writes the name.
  const declaredDtype = graph.first.config['dtype'] as string | { config?: { name?: string } } | undefined;
  const name = typeof declaredDtype === 'object' ? declaredDtype.config?.name : declaredDtype;
  const dtype = name === 'int32' || embeds ? 'int32' : 'float32';
  return { shape: shape as number[], dtype };
}

/** A layer's weights as Net parameters, their values and manifest names appended to `values` and `names`. */
function paramsOf(
  dir: string,
  json: ModelJson,
  weights: ReadonlyMap<string, Float32Array>,
  node: GraphNode,
  plan: LayerPlan,
  out: { values: Float32Array[]; names: string[] },
): ParamSpec[] {
  return plan.weights.map((suffix) => {
    // tfjs writes `<layer>/<weight>`; converters may add a scope before the layer or a `:0` after the weight.
    const full = [...weights.keys()].find((k) => {
      const parts = k.replace(/:\d+$/, '').split('/');
      return parts[parts.length - 1] === suffix && parts.includes(node.name);
    });
    const spec = full
      ? json.weightsManifest.flatMap((g) => g.weights).find((w) => w.name === full)
      : undefined;
    if (!full || !spec) {
      throw new TfjsModelError(
        dir,
        `layer '${node.name}' (${node.layer.class_name}) has no '${suffix}' weight in the manifest`,
      );
    }
    out.values.push(weights.get(full) as Float32Array);
    out.names.push(full);
    return { name: suffix, shape: spec.shape, ...(plan.buffers?.includes(suffix) ? { buffer: true } : {}) };
  });
}

/**
 * One sample's shape of every tensor of the graph, found by running it once on a zero sample with the saved
 * weights (the topology states shapes only through its layers): what unpacking a live set needs.
 */
function traceShapes(
  graph: LayerGraph,
  plans: readonly LayerPlan[],
  params: readonly (readonly ParamSpec[])[],
  values: readonly Float32Array[],
  input: { shape: number[]; dtype: 'float32' | 'int32' },
): TensorShapes {
  const shapes = new Map<string, { shape: readonly number[]; dtype: tf.DataType }>();
  tf.tidy(() => {
    const tensors = new Map<string, tf.Tensor>([[graph.input, tf.zeros([1, ...input.shape], input.dtype)]]);
    let k = 0;
    graph.nodes.forEach((node, i) => {
      const w = params[i].map((p) => tf.tensor(values[k++], [...p.shape]));
      const inputs = node.inputs.map((id) => tensors.get(id) as tf.Tensor);
      tensors.set(node.name, plans[i].forward(w, inputs, { training: false, seed: 0 }, i));
    });
    for (const [id, t] of tensors) shapes.set(id, { shape: t.shape.slice(1), dtype: t.dtype });
  });
  return shapes;
}

function read(dir: string): TfjsModel {
  const file = join(dir, 'model.json');
  let json: ModelJson;
  try {
    json = JSON.parse(readFileSync(file, 'utf8')) as ModelJson;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TfjsModelError(
      dir,
      code === 'ENOENT' ? `no model.json in ${dir}` : `${file} is not JSON: ${(err as Error).message}`,
    );
  }
  if (!json.modelTopology) throw new TfjsModelError(dir, `${file} has no modelTopology: not a layers model`);
  let graph: LayerGraph;
  let live: { before: string[][]; after: string[][] };
  try {
    graph = layerGraph(json.modelTopology);
    live = liveSets(graph);
  } catch (err) {
    if (err instanceof GraphError) throw new TfjsModelError(dir, err.message);
    throw err;
  }
  const weights = readWeights(dir, json);
  const input = inputShapeOf(dir, graph);
  const plans = graph.nodes.map((node, i) => {
    const plan = planLayer(dir, node.layer, i, node.name === graph.output);
    const arity = plan.merges ? node.inputs.length >= 2 : node.inputs.length === 1;
    if (!arity) {
      throw new TfjsModelError(
        dir,
        `layer '${node.name}' (${node.layer.class_name}) takes ${node.inputs.length} inputs: ${plan.merges ? 'a merge takes two or more' : 'it takes one'}`,
      );
    }
    return plan;
  });
  const flat = { values: [] as Float32Array[], names: [] as string[] };
  const params = graph.nodes.map((node, i) => paramsOf(dir, json, weights, node, plans[i], flat));
  const packs = live.after.some((ids) => ids.length > 1);
  const shapes = packs ? traceShapes(graph, plans, params, flat.values, input) : undefined;
  const blocks: Block[] = graph.nodes.map((node, i) => {
    const plan = plans[i];
    const inputsOf = (x: tf.Tensor) => {
      const values = unpack(x, live.before[i], shapes);
      return { values, inputs: node.inputs.map((id) => values.get(id) as tf.Tensor) };
    };
    const statistics = plan.statistics;
    return {
      name: node.name,
      params: params[i],
      forward: (w, x, mode, index, summed): BlockOutput => {
        const { values, inputs } = inputsOf(x);
        const y = plan.forward(w, inputs, mode, index, summed);
        values.set(node.name, y);
        return { y: pack(values, live.after[i]), taps: { hidden: y } };
      },
      // A statistics block inside an open branch takes its input out of the packed live set first.
      ...(statistics
        ? { statistics: { ...statistics, local: (x: tf.Tensor) => statistics.local(inputsOf(x).inputs[0]) } }
        : {}),
    };
  });
  const net: Net = {
    kind: 'tfjs',
    inputShape: input.shape,
    inputDtype: input.dtype,
    blocks,
    init: () => flat.values.map((v) => v.slice()),
  };
  return { net, values: flat.values, json, weightNames: flat.names };
}

const cache = new Map<string, TfjsModel>();

/** The model directory `dir` as a Net (read once per process while model.json is unchanged). */
export function readTfjsModel(dir: string): TfjsModel {
  const path = resolve(dir);
  let stamp = 'missing';
  try {
    const st = statSync(join(path, 'model.json'));
    stamp = `${st.mtimeMs}:${st.size}`;
  } catch {}
  const key = `${path}\0${stamp}`;
  let model = cache.get(key);
  if (!model) {
    model = read(path);
    cache.set(key, model);
  }
  return model;
}

/**
 * The user's model.json with `values` as its weights: the same topology (its final softmax included), the weights
 * manifest pointing at one `weights.bin` that holds `values` back to back, in `netParams` order.
 */
export function tfjsModelJson(model: TfjsModel, weightsFile: string): string {
  const specs = model.json.weightsManifest.flatMap((g) => g.weights);
  const weights = model.weightNames.map((name) => {
    const spec = specs.find((w) => w.name === name) as WeightSpec;
    return { name, shape: spec.shape, dtype: 'float32' };
  });
  return JSON.stringify({
    ...model.json,
    weightsManifest: [{ paths: [`./${weightsFile}`], weights }],
  });
}
