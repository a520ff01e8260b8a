/**
 * A tfjs / Keras layers topology as a graph the engine's block chain can run: every layer (but the input) is a
 * block, in the topology's order, and what flows from one block to the next is the set of tensors still needed
 * later (the live set). In a chain that is one tensor, passed as it is; where branches are open (a residual
 * connection's skip tensor waiting for its Add) the live tensors travel packed side by side as one [batch, Σ size]
 * float32 tensor, so that activation checkpointing, ZeRO-3 and pipeline cuts see one tensor between any two blocks.
 */
import { tf } from '../backend/tf.ts';

export interface LayerJson {
  readonly class_name: string;
  readonly config: Record<string, unknown> & { name?: string };
  readonly inbound_nodes?: unknown[];
}

/** One layer of the graph: its JSON, its name, and the names of the layers whose outputs it takes, in order. */
export interface GraphNode {
  readonly layer: LayerJson;
  readonly name: string;
  readonly inputs: readonly string[];
}

export interface LayerGraph {
  /** The input layer's JSON (or a Sequential's first layer), which declares the input shape and dtype. */
  readonly first: LayerJson;
  /** The name the model's input goes by among the nodes' inputs. */
  readonly input: string;
  /** Every layer but the input, in an order where each comes after the layers it takes. */
  readonly nodes: readonly GraphNode[];
  /** The node whose output is the model's. */
  readonly output: string;
}

/** Where a graph cannot be run: the layer (or undefined for the model) and why. */
export class GraphError extends Error {}

const SEQUENTIAL_INPUT = 'input';

export function layerName(layer: LayerJson, i: number): string {
  return String(layer.config.name ?? (layer as { name?: string }).name ?? `layer_${i}`);
}

/** A layer's inbound layer names, from tfjs / Keras 2 (`[[[name, node, tensor, kwargs], …]]`) or Keras 3 nodes. */
function inboundOf(layer: LayerJson, i: number): string[] {
  const nodes = layer.inbound_nodes ?? [];
  const name = layerName(layer, i);
  if (nodes.length === 0) return [];
  if (nodes.length > 1) {
    throw new GraphError(
      `layer '${name}' (${layer.class_name}) is called ${nodes.length} times: kd-launch trains each layer once (no shared layers)`,
    );
  }
  const node = nodes[0];
  const names: string[] = [];
  const refer = (history: unknown) => {
    const [from, nodeIndex, tensorIndex] = history as [string, number, number];
    if (nodeIndex !== 0 || tensorIndex !== 0) {
      throw new GraphError(
        `layer '${name}' (${layer.class_name}) takes output ${tensorIndex} of call ${nodeIndex} of '${from}': kd-launch runs layers with one output, called once`,
      );
    }
    names.push(String(from));
  };
  if (Array.isArray(node)) {
    for (const entry of node) refer(entry);
    return names;
  }
  // Keras 3: {args: [tensor | [tensor, …]], kwargs}, each tensor {class_name: '__keras_tensor__', config: {keras_history}}.
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const item of v) walk(item);
    else if (typeof v === 'object' && v !== null) {
      const history = (v as { config?: { keras_history?: unknown } }).config?.keras_history;
      if (history !== undefined) refer(history);
    }
  };
  walk((node as { args?: unknown }).args);
  return names;
}

/** The one tensor a functional model's `input_layers` / `output_layers` names, or a refusal. */
function onlyOne(model: Record<string, unknown>, key: 'input_layers' | 'output_layers'): string {
  const raw = model[key] as unknown[] | undefined;
  const list = Array.isArray(raw?.[0]) ? (raw as unknown[][]) : raw ? [raw] : [];
  if (list.length !== 1) {
    const what = key === 'input_layers' ? 'inputs' : 'outputs';
    throw new GraphError(
      `the model has ${list.length} ${what}: kd-launch trains models with one input and one output`,
    );
  }
  return String(list[0][0]);
}

/** The graph of a Sequential or functional topology (`modelTopology`, or its `model_config`). */
export function layerGraph(topology: Record<string, unknown>): LayerGraph {
  const model = (topology['model_config'] as Record<string, unknown> | undefined) ?? topology;
  const className = String(model['class_name']);
  const config = model['config'] as
    | ({ layers?: LayerJson[] } & Record<string, unknown>)
    | LayerJson[]
    | undefined;
  const layers = Array.isArray(config) ? config : (config?.layers ?? []);
  if (layers.length === 0) throw new GraphError('the model has no layers');
  if (className === 'Sequential') {
    const body = layers.filter((l) => l.class_name !== 'InputLayer');
    const nodes = body.map((layer, i) => ({
      layer,
      name: layerName(layer, i),
      inputs: [i === 0 ? SEQUENTIAL_INPUT : layerName(body[i - 1], i - 1)],
    }));
    return { first: layers[0], input: SEQUENTIAL_INPUT, nodes, output: nodes[nodes.length - 1].name };
  }
  if (className !== 'Model' && className !== 'Functional') {
    throw new GraphError(`model.json holds a ${className}, not a Sequential or functional layers model`);
  }
  const cfg = config as Record<string, unknown>;
  const input = onlyOne(cfg, 'input_layers');
  const output = onlyOne(cfg, 'output_layers');
  const seen = new Set<string>();
  const nodes: GraphNode[] = [];
  let first: LayerJson | undefined;
  layers.forEach((layer, i) => {
    const name = layerName(layer, i);
    seen.add(name);
    if (layer.class_name === 'InputLayer') {
      if (name === input) first = layer;
      return;
    }
    const inputs = inboundOf(layer, i);
    const missing = inputs.find((from) => !seen.has(from) || from === name);
    if (inputs.length === 0 || missing !== undefined) {
      throw new GraphError(
        `layer '${name}' (${layer.class_name}) takes ${missing === undefined ? 'no input' : `'${missing}', which does not come before it`}`,
      );
    }
    nodes.push({ layer, name, inputs });
  });
  if (!first) throw new GraphError(`the model's input '${input}' is not an InputLayer of the model`);
  return { first, input, nodes, output };
}

/**
 * The live set before and after each node (names, in the order they were made): a tensor is live from the node
 * that makes it until the last node that takes it; the model's output stays live to the end.
 */
export function liveSets(graph: LayerGraph): { before: string[][]; after: string[][] } {
  const lastUse = new Map<string, number>();
  graph.nodes.forEach((n, k) => {
    for (const from of n.inputs) lastUse.set(from, k);
  });
  lastUse.set(graph.output, graph.nodes.length);
  const made = [graph.input, ...graph.nodes.map((n) => n.name)];
  const liveAfter = (k: number) => made.slice(0, k + 2).filter((id) => (lastUse.get(id) ?? -1) > k);
  const after = graph.nodes.map((_, k) => liveAfter(k));
  const before = graph.nodes.map((_, k) => (k === 0 ? [graph.input] : after[k - 1]));
  const end = after[after.length - 1];
  if (end.length !== 1 || end[0] !== graph.output) {
    throw new GraphError(`the model's output '${graph.output}' is not made by its last layer`);
  }
  return { before, after };
}

/** One sample's shape and dtype of each tensor of the graph, by name. */
export type TensorShapes = ReadonlyMap<string, { shape: readonly number[]; dtype: tf.DataType }>;

/** The live tensors `ids` as one tensor: the tensor itself when it is alone, else packed side by side as float32. */
export function pack(values: ReadonlyMap<string, tf.Tensor>, ids: readonly string[]): tf.Tensor {
  const tensors = ids.map((id) => values.get(id) as tf.Tensor);
  if (tensors.length === 1) return tensors[0];
  const batch = tensors[0].shape[0];
  return tf.concat(
    tensors.map((t) => tf.reshape(t.dtype === 'float32' ? t : tf.cast(t, 'float32'), [batch, -1])),
    1,
  );
}

/** The live tensors `ids` back from `pack`'s tensor (token ids come back as int32, exact below 2^24). */
export function unpack(
  x: tf.Tensor,
  ids: readonly string[],
  shapes: TensorShapes | undefined,
): Map<string, tf.Tensor> {
  if (ids.length === 1) return new Map([[ids[0], x]]);
  if (!shapes) throw new Error('packed live tensors need their shapes');
  const out = new Map<string, tf.Tensor>();
  const batch = x.shape[0];
  let at = 0;
  for (const id of ids) {
    const { shape, dtype } = shapes.get(id) as { shape: readonly number[]; dtype: tf.DataType };
    const size = shape.reduce((a, b) => a * b, 1);
    const part = tf.reshape(tf.slice(x, [0, at], [batch, size]), [batch, ...shape]);
    out.set(id, dtype === 'float32' ? part : tf.cast(part, dtype));
    at += size;
  }
  return out;
}
