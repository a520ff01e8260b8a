/**
 * A tfjs layers model as an ONNX graph (fp32), for onnxruntime and every other ONNX consumer: the model's
 * layers in order (a chain: one input, one output, each layer fed by the one before), each written as the ONNX
 * operators that compute what the layer computes in inference (dropout is the identity), with its weights as
 * initializers. The batch dimension stays symbolic (`N`).
 *
 * tfjs is channels-last (NHWC); ONNX's Conv and pooling are channels-first (NCHW). The image is transposed to
 * NCHW before the first layer that needs it and back to NHWC where the order of its values matters (Flatten, a
 * Dense or softmax over the last axis, the output), so the exported model takes and gives what the tfjs model
 * does, and flattens in its order: the Dense weights after a Flatten are used as they are.
 *
 * A quantized model (src/engine/quantization.ts) is written in ONNX's QDQ form: each Dense and Conv2D takes its
 * weights as 8-bit initializers through DequantizeLinear (one scale per output channel, or one), and its input
 * through QuantizeLinear/DequantizeLinear (uint8, the calibrated scale and zero point). onnxruntime fuses these
 * into integer kernels; every other ONNX consumer reads them as the float model that kd-launch evaluated. The
 * weights are uint8 with zero point 128 (the symmetric integers + 128, the same bytes): with int8 weights
 * onnxruntime's x86 kernels (U8S8, VPMADDUBSW) saturate 16-bit sums and computed logits 1.35 away from the
 * model's on MNIST digits, where U8U8 gives them to 4e-6.
 */
import type * as tfTypes from '@tensorflow/tfjs';
import {
  type AffineQuantization,
  quantizeWeights,
  type WeightQuantization,
} from '../../engine/quantization.ts';
import {
  type AttributeValue,
  DataType,
  encodeModel,
  type OnnxGraph,
  type OnnxNode,
  type OnnxTensor,
} from './onnx-proto.ts';

/**
 * How a quantized model is written: its weights' bits and granularity, and the input quantizer of each layer with
 * a kernel (Dense, Conv2D), in the order of those layers.
 */
export interface OnnxQuantization {
  readonly weights: WeightQuantization;
  readonly inputs: readonly AffineQuantization[];
}

/** A model that has no ONNX form here: names the layer and says why. */
export class OnnxExportError extends Error {
  override name = 'OnnxExportError';
}

/** Where a rank-4 value's channels are: as tfjs holds it, or as ONNX's Conv wants it. */
type Layout = 'nhwc' | 'nchw';

/** The zero point of the uint8 weights: the symmetric integers shifted into 1…255. */
const WEIGHT_ZERO_POINT = 128;
const TO_NCHW = [0, 3, 1, 2];
const TO_NHWC = [0, 2, 3, 1];
const BATCH = 'N';

type Config = Record<string, unknown>;

/** The graph being written: nodes in order, initializers, and the value the next layer reads. */
class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  #names = new Set<string>();
  /** The current value's name, rank and (at rank 4) layout. */
  value: string;
  rank: number;
  layout: Layout = 'nhwc';

  /** A quantized model's quantization, and how many of its kernel layers are written. */
  readonly quantization: OnnxQuantization | undefined;
  kernels = 0;

  constructor(input: string, rank: number, quantization?: OnnxQuantization) {
    this.value = input;
    this.rank = rank;
    this.quantization = quantization;
  }

  /** A name not used yet, from `base`. */
  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.#names.has(name); i++) name = `${base}_${i}`;
    this.#names.add(name);
    return name;
  }

  /** Appends `opType` on `inputs` (the current value first unless given) and makes its output current. */
  op(
    opType: string,
    scope: string,
    extraInputs: readonly string[] = [],
    attributes?: Record<string, AttributeValue>,
  ): string {
    const out = this.fresh(`${scope}/${opType}`);
    this.nodes.push({
      opType,
      name: out,
      inputs: [this.value, ...extraInputs],
      outputs: [out],
      ...(attributes ? { attributes } : {}),
    });
    this.value = out;
    return out;
  }

  /** A float initializer, named after its layer and role. */
  weight(scope: string, role: string, dims: readonly number[], values: Float32Array): string {
    return this.initializer(scope, role, dims, DataType.float, values);
  }

  /** An initializer of `dataType` holding `values`' bytes. */
  initializer(
    scope: string,
    role: string,
    dims: readonly number[],
    dataType: DataType,
    values: Float32Array | Int8Array | Uint8Array,
  ): string {
    const name = this.fresh(`${scope}/${role}`);
    const raw = new Uint8Array(values.byteLength);
    raw.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    this.initializers.push({ name, dims, dataType, raw });
    return name;
  }

  /** A node off the main line (its output is not the current value). */
  side(
    opType: string,
    scope: string,
    inputs: readonly string[],
    attributes?: Record<string, AttributeValue>,
  ): string {
    const out = this.fresh(`${scope}/${opType}`);
    this.nodes.push({ opType, name: out, inputs, outputs: [out], ...(attributes ? { attributes } : {}) });
    return out;
  }

  /** The current rank-4 value in `layout` (a Transpose when it is in the other one). */
  toLayout(layout: Layout, scope: string): void {
    if (this.rank !== 4 || this.layout === layout) return;
    this.op('Transpose', scope, [], { perm: { ints: layout === 'nchw' ? TO_NCHW : TO_NHWC } });
    this.layout = layout;
  }
}

/** What one layer needs to be written: its class, config, weights and the shapes around it. */
interface LayerView {
  name: string;
  className: string;
  config: Config;
  weights: { name: string; shape: number[]; values: Float32Array }[];
  inputShape: readonly (number | null)[];
}

function viewOf(layer: tfTypes.layers.Layer): LayerView {
  const inputShape = layer.inboundNodes[0]?.inputShapes;
  const shape = (Array.isArray(inputShape?.[0]) ? inputShape[0] : inputShape) as (number | null)[];
  return {
    name: layer.name,
    className: layer.getClassName(),
    config: layer.getConfig() as Config,
    weights: layer.weights.map((w) => ({
      name: w.originalName,
      shape: w.shape as number[],
      values: w.read().dataSync() as Float32Array,
    })),
    inputShape: shape ?? [],
  };
}

function refuse(layer: LayerView, why: string): never {
  throw new OnnxExportError(`layer '${layer.name}' (${layer.className}): ${why}`);
}

/** A weight by its role (`kernel`, `bias`, `gamma`, …), from the end of its tfjs name. */
function weightOf(layer: LayerView, role: string): LayerView['weights'][number] | undefined {
  return layer.weights.find((w) => w.name === role || w.name.endsWith(`/${role}`));
}

function pair(value: unknown, layer: LayerView, field: string): [number, number] {
  const v = Array.isArray(value) ? value : [value, value];
  if (v.length !== 2 || !v.every((x) => Number.isInteger(x) && x > 0))
    refuse(layer, `${field} ${JSON.stringify(value)} is not two positive integers`);
  return [v[0], v[1]];
}

/**
 * ONNX `pads` [top, left, bottom, right] for tfjs' padding over input size `size`: `valid` none, `same` the
 * total that keeps ceil(size / stride) outputs, the odd pixel at the end (as TensorFlow pads).
 */
function padsOf(
  layer: LayerView,
  padding: unknown,
  size: readonly number[],
  kernel: readonly number[],
  strides: readonly number[],
  dilations: readonly number[],
): number[] {
  if (padding === 'valid') return [0, 0, 0, 0];
  if (padding !== 'same') refuse(layer, `padding '${String(padding)}' (only 'valid' and 'same')`);
  const before: number[] = [];
  const after: number[] = [];
  for (let d = 0; d < 2; d++) {
    const extent = (kernel[d] - 1) * dilations[d] + 1;
    const total = Math.max((Math.ceil(size[d] / strides[d]) - 1) * strides[d] + extent - size[d], 0);
    before.push(Math.floor(total / 2));
    after.push(total - Math.floor(total / 2));
  }
  return [...before, ...after];
}

function spatialSize(layer: LayerView): [number, number] {
  const [, h, w] = layer.inputShape;
  if (layer.inputShape.length !== 4 || typeof h !== 'number' || typeof w !== 'number')
    refuse(layer, `needs a known image size; its input is ${JSON.stringify(layer.inputShape)}`);
  return [h, w];
}

function channelsLast(layer: LayerView): void {
  const format = layer.config['dataFormat'];
  if (format !== undefined && format !== 'channelsLast') refuse(layer, `dataFormat '${String(format)}'`);
}

/** Writes tfjs activation `name` on the current value. */
function activation(g: GraphBuilder, layer: LayerView, name: unknown): void {
  const scope = layer.name;
  switch (name) {
    case undefined:
    case null:
    case 'linear':
      return;
    case 'relu':
      g.op('Relu', scope);
      return;
    case 'relu6':
      g.op('Clip', scope, [scalar(g, scope, 'min', 0), scalar(g, scope, 'max', 6)]);
      return;
    case 'sigmoid':
      g.op('Sigmoid', scope);
      return;
    case 'hardSigmoid':
      g.op('HardSigmoid', scope, [], { alpha: { float: 0.2 }, beta: { float: 0.5 } });
      return;
    case 'tanh':
      g.op('Tanh', scope);
      return;
    case 'elu':
      g.op('Elu', scope, [], { alpha: { float: 1 } });
      return;
    case 'selu':
      g.op('Selu', scope);
      return;
    case 'softplus':
      g.op('Softplus', scope);
      return;
    case 'softsign':
      g.op('Softsign', scope);
      return;
    case 'swish': {
      const x = g.value;
      const s = g.op('Sigmoid', scope);
      g.value = x;
      g.op('Mul', scope, [s]);
      return;
    }
    case 'gelu': {
      // tfjs' exact GELU, x · ½(1 + erf(x / √2)), in its order of operations.
      const x = g.value;
      g.op('Div', scope, [scalar(g, scope, 'sqrt2', Math.SQRT2)]);
      g.op('Erf', scope);
      g.op('Add', scope, [scalar(g, scope, 'one', 1)]);
      g.op('Mul', scope, [scalar(g, scope, 'half', 0.5)]);
      g.op('Mul', scope, [x]);
      return;
    }
    case 'softmax':
      g.toLayout('nhwc', scope);
      g.op('Softmax', scope, [], { axis: { int: -1 } });
      return;
    default:
      refuse(layer, `activation '${String(name)}' has no ONNX form here`);
  }
}

function scalar(g: GraphBuilder, scope: string, role: string, value: number): string {
  return g.weight(scope, role, [], Float32Array.of(value));
}

/** [kh, kw, in, out] → [out, in, kh, kw]. */
function convKernelToOihw<A extends Float32Array | Int8Array>(
  kernel: A,
  [kh, kw, cin, cout]: readonly number[],
): A {
  const out = kernel.slice() as A;
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < cin; i++)
        for (let o = 0; o < cout; o++)
          out[((o * cin + i) * kh + y) * kw + x] = kernel[((y * kw + x) * cin + i) * cout + o];
  return out;
}

/**
 * A kernel as the layer's weight input: a float initializer, or (quantized) its integers + 128 as uint8 and their
 * scales through DequantizeLinear, the scales along output-channel axis `axis` of the written layout. `layout`
 * takes tfjs' layout (output channels last) to the written one.
 */
function kernelInput(
  g: GraphBuilder,
  layer: LayerView,
  kernel: LayerView['weights'][number],
  dims: readonly number[],
  axis: number,
  layout: <A extends Float32Array | Int8Array>(values: A) => A,
): string {
  const q = g.quantization;
  if (!q) return g.weight(layer.name, 'kernel', dims, layout(kernel.values));
  const { ints, scales } = quantizeWeights(kernel.values, kernel.shape, q.weights);
  const perAxis = scales.length > 1;
  const scaleDims = perAxis ? [scales.length] : [];
  const offset = Uint8Array.from(layout(ints), (v) => v + WEIGHT_ZERO_POINT);
  return g.side(
    'DequantizeLinear',
    layer.name,
    [
      g.initializer(layer.name, 'kernel_q', dims, DataType.uint8, offset),
      g.weight(layer.name, 'kernel_scale', scaleDims, scales),
      g.initializer(
        layer.name,
        'kernel_zero_point',
        scaleDims,
        DataType.uint8,
        new Uint8Array(scales.length).fill(WEIGHT_ZERO_POINT),
      ),
    ],
    perAxis ? { axis: { int: axis } } : undefined,
  );
}

/** A quantized model: the current value through its layer's input quantizer (uint8 QDQ). */
function quantizeInput(g: GraphBuilder, layer: LayerView): void {
  const q = g.quantization;
  if (!q) return;
  const a = q.inputs[g.kernels++] ?? refuse(layer, 'has no calibrated input quantizer');
  const scale = g.weight(layer.name, 'input_scale', [], Float32Array.of(a.scale));
  const zero = g.initializer(layer.name, 'input_zero_point', [], DataType.uint8, Uint8Array.of(a.zeroPoint));
  g.op('QuantizeLinear', layer.name, [scale, zero]);
  g.op('DequantizeLinear', layer.name, [scale, zero]);
}

function dense(g: GraphBuilder, layer: LayerView): void {
  const kernel = weightOf(layer, 'kernel') ?? refuse(layer, 'has no kernel');
  g.toLayout('nhwc', layer.name);
  quantizeInput(g, layer);
  g.op('MatMul', layer.name, [kernelInput(g, layer, kernel, kernel.shape, 1, (v) => v)]);
  const bias = weightOf(layer, 'bias');
  if (bias) g.op('Add', layer.name, [g.weight(layer.name, 'bias', bias.shape, bias.values)]);
  activation(g, layer, layer.config['activation']);
}

function conv2d(g: GraphBuilder, layer: LayerView): void {
  channelsLast(layer);
  const kernel = weightOf(layer, 'kernel') ?? refuse(layer, 'has no kernel');
  const size = spatialSize(layer);
  const kernelShape = kernel.shape.slice(0, 2);
  const strides = pair(layer.config['strides'] ?? 1, layer, 'strides');
  const dilations = pair(layer.config['dilationRate'] ?? 1, layer, 'dilationRate');
  const pads = padsOf(layer, layer.config['padding'], size, kernelShape, strides, dilations);
  g.toLayout('nchw', layer.name);
  quantizeInput(g, layer);
  const [kh, kw, cin, cout] = kernel.shape;
  const inputs = [
    kernelInput(g, layer, kernel, [cout, cin, kh, kw], 0, (v) => convKernelToOihw(v, kernel.shape)),
  ];
  const bias = weightOf(layer, 'bias');
  if (bias) inputs.push(g.weight(layer.name, 'bias', bias.shape, bias.values));
  g.op('Conv', layer.name, inputs, {
    kernel_shape: { ints: kernelShape },
    strides: { ints: strides },
    dilations: { ints: dilations },
    pads: { ints: pads },
  });
  activation(g, layer, layer.config['activation']);
}

function pool(g: GraphBuilder, layer: LayerView, opType: 'MaxPool' | 'AveragePool'): void {
  channelsLast(layer);
  const kernel = pair(layer.config['poolSize'] ?? 2, layer, 'poolSize');
  const strides = pair(layer.config['strides'] ?? kernel, layer, 'strides');
  const pads = padsOf(layer, layer.config['padding'], spatialSize(layer), kernel, strides, [1, 1]);
  g.toLayout('nchw', layer.name);
  // AveragePool's default count_include_pad = 0 divides by the pixels inside the image, as TensorFlow does.
  g.op(opType, layer.name, [], {
    kernel_shape: { ints: kernel },
    strides: { ints: strides },
    pads: { ints: pads },
  });
}

function flatten(g: GraphBuilder, layer: LayerView): void {
  g.toLayout('nhwc', layer.name);
  g.op('Flatten', layer.name, [], { axis: { int: 1 } });
  g.rank = 2;
}

function batchNorm(g: GraphBuilder, layer: LayerView): void {
  const axis = layer.config['axis'];
  if (axis !== -1 && axis !== g.rank - 1) refuse(layer, `axis ${String(axis)} (only the last, the channels)`);
  const mean = weightOf(layer, 'moving_mean') ?? refuse(layer, 'has no moving_mean');
  const variance = weightOf(layer, 'moving_variance') ?? refuse(layer, 'has no moving_variance');
  const channels = mean.values.length;
  const gamma = weightOf(layer, 'gamma')?.values ?? new Float32Array(channels).fill(1);
  const beta = weightOf(layer, 'beta')?.values ?? new Float32Array(channels);
  if (g.rank !== 2 && g.rank !== 4) refuse(layer, `a rank-${g.rank} input (2 or 4 here)`);
  g.toLayout('nchw', layer.name);
  const w = (role: string, values: Float32Array) => g.weight(layer.name, role, [channels], values);
  g.op(
    'BatchNormalization',
    layer.name,
    [
      w('gamma', gamma),
      w('beta', beta),
      w('moving_mean', mean.values),
      w('moving_variance', variance.values),
    ],
    { epsilon: { float: Number(layer.config['epsilon'] ?? 1e-3) } },
  );
}

type LayerWriter = (g: GraphBuilder, layer: LayerView) => void;

/** How each layer kd-launch writes becomes ONNX operators (anything else is refused by name). */
const WRITERS: Record<string, LayerWriter> = {
  // Inference: dropout is the identity.
  Dropout: () => {},
  Dense: dense,
  Conv2D: conv2d,
  MaxPooling2D: (g, layer) => pool(g, layer, 'MaxPool'),
  AveragePooling2D: (g, layer) => pool(g, layer, 'AveragePool'),
  GlobalAveragePooling2D: (g, layer) => {
    channelsLast(layer);
    g.toLayout('nchw', layer.name);
    g.op('GlobalAveragePool', layer.name);
    flatten(g, layer);
  },
  Flatten: flatten,
  Activation: (g, layer) => activation(g, layer, layer.config['activation']),
  ReLU: (g, layer) => {
    const max = layer.config['maxValue'];
    if (max == null) g.op('Relu', layer.name);
    else
      g.op('Clip', layer.name, [scalar(g, layer.name, 'min', 0), scalar(g, layer.name, 'max', Number(max))]);
  },
  Softmax: (g, layer) => {
    // The layer's axis counts in tfjs' layout (its default, 1, is the last only at rank 2).
    g.toLayout('nhwc', layer.name);
    g.op('Softmax', layer.name, [], { axis: { int: Number(layer.config['axis'] ?? -1) } });
  },
  BatchNormalization: batchNorm,
};

/** The layers written, by tfjs class name. */
export const ONNX_LAYERS: readonly string[] = Object.keys(WRITERS);

function writeLayer(g: GraphBuilder, layer: LayerView): void {
  const write = WRITERS[layer.className];
  if (!write) refuse(layer, `no ONNX form here (${ONNX_LAYERS.join(', ')})`);
  write(g, layer);
}

/** The model's layers, checked to form a chain from its one input to its one output. */
function chainOf(model: tfTypes.LayersModel): tfTypes.layers.Layer[] {
  if (model.inputs.length !== 1 || model.outputs.length !== 1)
    throw new OnnxExportError(
      `the model has ${model.inputs.length} inputs and ${model.outputs.length} outputs (one of each here)`,
    );
  const layers = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  layers.forEach((layer, i) => {
    const inbound = layer.inboundNodes.flatMap((n) => n.inboundLayers);
    const fed =
      i === 0
        ? inbound.every((l) => l.getClassName() === 'InputLayer')
        : inbound.length === 1 && inbound[0] === layers[i - 1];
    if (layer.inboundNodes.length !== 1 || !fed)
      throw new OnnxExportError(
        `layer '${layer.name}' (${layer.getClassName()}) is not fed by the layer before it: only a chain of layers is exported to ONNX`,
      );
  });
  return layers;
}

/**
 * The ONNX graph of a tfjs layers model whose layers form a chain, quantized (QDQ) with `quantization`; throws
 * `OnnxExportError` naming what is not written.
 */
export function layersToOnnxGraph(
  model: tfTypes.LayersModel,
  quantization?: OnnxQuantization,
  name = model.name,
): OnnxGraph {
  const inputShape = model.inputs[0].shape;
  if (model.inputs[0].dtype !== 'float32')
    throw new OnnxExportError(`the model's input is ${model.inputs[0].dtype} (float32 here)`);
  const g = new GraphBuilder('input', inputShape.length, quantization);
  for (const layer of chainOf(model)) writeLayer(g, viewOf(layer));
  if (quantization && g.kernels !== quantization.inputs.length)
    throw new OnnxExportError(
      `the model has ${g.kernels} layers with a kernel, its quantization ${quantization.inputs.length} input quantizers`,
    );
  g.toLayout('nhwc', 'output');
  // The last value is renamed `output`, so the graph's output has a name that says what it is.
  const last = g.nodes[g.nodes.length - 1];
  if (last === undefined)
    throw new OnnxExportError('the model computes nothing: it has no layer with an ONNX form');
  last.outputs = ['output'] as readonly string[];
  const outputShape = model.outputs[0].shape;
  const dims = (shape: readonly (number | null)[]) => shape.map((d) => d ?? BATCH);
  return {
    name,
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [{ name: 'input', elemType: DataType.float, shape: dims(inputShape) }],
    outputs: [{ name: 'output', elemType: DataType.float, shape: dims(outputShape) }],
  };
}

/** A tfjs layers model as the bytes of a `.onnx` file (opset 17): fp32, or int8 QDQ with `quantization`. */
export function layersToOnnx(
  model: tfTypes.LayersModel,
  producerVersion: string,
  quantization?: OnnxQuantization,
): Uint8Array {
  return encodeModel(layersToOnnxGraph(model, quantization), producerVersion);
}
