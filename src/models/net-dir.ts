/**
 * A trained model as a directory kd-launch can rebuild as a Net (a teacher, a stage's output):
 *
 *   kd-model.json   {format, version, model: <the job's model spec>, weights: "weights.bin",
 *                    tensors: [{name, shape, offset}], parameters}   (offsets in bytes, fp32 little-endian)
 *   weights.bin     the Net's parameters in flat order
 *   model.json      the tfjs layers model (MLP and CNN), whose weights.bin is the same file: the zoo's layers
 *                   models hold the Net's tensors in the Net's order, so one copy of the weights serves both
 *                   `tf.loadLayersModel` and `loadNetModel`.
 *
 * A quantized model (version 2) holds each weight matrix and kernel as int8 with its scales in the tensor's entry
 * (`dtype: int8`, `scales`, one per output channel or one), and each quantized block's 8-bit input quantizer in
 * `quantization.activations`; it has no model.json (tfjs's own format is per-tensor uint8). An older reader then
 * refuses the directory instead of reading integers as floats.
 *
 * Written like save.ts writes: into a sibling temporary directory, fsynced, renamed into place.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { endianness } from 'node:os';
import { join, resolve } from 'node:path';
import { tf } from '../backend/tf.ts';
import { writeDirAtomically } from '../base/durable-file.ts';
import { keptBlocks, reducedSpec } from '../config/layer-reduction.ts';
import { ModelSpec } from '../config/schema.ts';
import { type Net, netParams } from '../engine/net.ts';
import {
  type AffineQuantization,
  dequantizeWeights,
  isQuantizedParam,
  quantizeWeights,
  type WeightQuantization,
} from '../engine/quantization.ts';
import { buildNet, toLayersModel } from './build.ts';
import { MODEL_JSON, WEIGHTS_BIN } from './save.ts';
import { readTfjsModel, tfjsModelJson } from './tfjs-dir.ts';

export const KD_MODEL_JSON = 'kd-model.json';
const FORMAT = 'kd-launch-net';
const VERSION = 1;
const QUANTIZED_VERSION = 2;

interface TensorEntry {
  name: string;
  shape: number[];
  /** Byte offset in the weights file. */
  offset: number;
  /**
   * Absent: float32. int8: symmetric integers, value = int × scales[i mod scales.length]. clustered: indices of
   * `bits` (4: two per byte, the first in the low nibble), value = codebook[index].
   */
  dtype?: 'int8' | 'clustered';
  scales?: number[];
  bits?: 4 | 8;
  codebook?: number[];
}

/** How a model's weight matrices and kernels are stored: as floats, as integers, or as cluster indices. */
export interface WeightEncoding {
  readonly quantization?: SavedQuantization;
  /** Clustered: at most this many distinct values per tensor, stored as indices into a codebook. */
  readonly clusters?: number;
}

/** How a quantized model was quantized: its weights' bits and scales, and each block's input quantizer. */
export interface SavedQuantization {
  readonly weights: WeightQuantization;
  /** Per block: its input's 8-bit affine quantizer, or undefined for a block not quantized. */
  readonly activations: readonly (AffineQuantization | undefined)[];
}

interface KdModelJson {
  format: typeof FORMAT;
  version: number;
  model: ModelSpec;
  weights: string;
  tensors: TensorEntry[];
  parameters: number;
  quantization?: {
    bits: 4 | 8;
    granularity: 'per_channel' | 'per_tensor';
    activations: ({ scale: number; zero_point: number } | null)[];
  };
  clustering?: { clusters: number };
}

/** A model directory read back: its spec, the Net built from it, and its parameter values in `Net.init`'s layout. */
export interface NetModel {
  spec: ModelSpec;
  net: Net;
  /** A quantized model's values are its integers times their scales. */
  values: Float32Array[];
  quantization?: SavedQuantization;
  /** A clustered model: its clusters per tensor. */
  clusters?: number;
}

function checkHost(): void {
  if (endianness() !== 'LE') throw new Error('kd-launch model files are little-endian; this host is not');
}

/** Whether the zoo has a tfjs layers form of the model (the Transformer has none). */
function hasLayersForm(spec: ModelSpec): boolean {
  return spec.type === 'mlp' || spec.type === 'cnn';
}

/** The tfjs `model.json` of the layers form of `spec`, whose weights manifest points at `weights.bin`. */
async function layersModelJson(spec: ModelSpec, values: readonly Float32Array[]): Promise<string> {
  const model = toLayersModel(spec, values);
  try {
    let artifacts: tf.io.ModelArtifacts | undefined;
    await model.save(
      tf.io.withSaveHandler(async (a) => {
        artifacts = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    if (!artifacts?.modelTopology || artifacts.modelTopology instanceof ArrayBuffer) {
      throw new Error('the layers model produced no JSON topology');
    }
    // The one weights file is the Net's flat layout: the tfjs manifest must describe the same tensors in order.
    const specs = artifacts.weightSpecs ?? [];
    const same =
      specs.length === values.length &&
      specs.every((w, i) => w.dtype === 'float32' && w.shape.reduce((a, b) => a * b, 1) === values[i].length);
    if (!same) throw new Error(`the ${spec.type}'s layers weights are not laid out as its Net's`);
    const json: tf.io.ModelJSON = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format ?? 'layers-model',
      generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version_layers}`,
      convertedBy: null,
      weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: specs }],
    };
    return JSON.stringify(json);
  } finally {
    model.dispose();
  }
}

/**
 * Writes the Net of `spec` with `values` (one array per parameter, `netParams` order) to `dir`, atomically; with
 * `quantization`, its weight matrices and kernels as integers. Returns the directory's size in bytes.
 */
export async function saveNetModel(
  dir: string,
  spec: ModelSpec,
  values: readonly Float32Array[],
  { quantization, clusters }: WeightEncoding = {},
): Promise<number> {
  checkHost();
  const net = buildNet(spec);
  const params = netParams(net);
  if (params.length !== values.length) {
    throw new RangeError(`the ${spec.type} has ${params.length} parameter tensors, ${values.length} given`);
  }
  const quantizedParam = net.blocks.flatMap((b) => b.params.map(isQuantizedParam));
  let offset = 0;
  const parts: Uint8Array[] = [];
  const tensors = params.map((p, i): TensorEntry => {
    const size = p.shape.reduce((a, b) => a * b, 1);
    if (values[i].length !== size)
      throw new RangeError(`${p.name} has ${size} values, ${values[i].length} given`);
    const entry: TensorEntry = { name: p.name, shape: [...p.shape], offset };
    if (clusters && quantizedParam[i]) {
      const { packed, codebook, bits } = clusteredForm(p.name, values[i], clusters);
      parts.push(packed);
      Object.assign(entry, { dtype: 'clustered', bits, codebook });
    } else if (quantization && quantizedParam[i]) {
      const { ints, scales } = quantizeWeights(values[i], p.shape, quantization.weights);
      parts.push(new Uint8Array(ints.buffer));
      entry.dtype = 'int8';
      entry.scales = Array.from(scales);
    } else {
      parts.push(new Uint8Array(values[i].buffer, values[i].byteOffset, values[i].byteLength));
    }
    offset += parts[parts.length - 1].byteLength;
    return entry;
  });
  const weights = Buffer.concat(parts);
  const meta: KdModelJson = {
    format: FORMAT,
    version: quantization || clusters ? QUANTIZED_VERSION : VERSION,
    // A user's tfjs model is this directory's own model.json from now on (its topology, these weights).
    model: spec.type === 'tfjs' ? { type: 'tfjs', path: '.' } : spec,
    weights: WEIGHTS_BIN,
    tensors,
    parameters: values.reduce((n, v) => n + v.length, 0),
    ...(quantization
      ? {
          quantization: {
            bits: quantization.weights.bits,
            granularity: quantization.weights.perChannel ? 'per_channel' : 'per_tensor',
            activations: quantization.activations.map((a) =>
              a ? { scale: a.scale, zero_point: a.zeroPoint } : null,
            ),
          },
        }
      : {}),
    ...(clusters ? { clustering: { clusters } } : {}),
  };
  const files: [string, Uint8Array | string][] = [
    [WEIGHTS_BIN, weights],
    [KD_MODEL_JSON, `${JSON.stringify(meta, null, 1)}\n`],
  ];
  // tfjs reads floats and per-tensor uint8 only: a quantized or clustered model is kd-launch's (and export's) alone.
  const floats = !quantization && !clusters;
  if (floats && spec.type === 'tfjs') {
    files.push([MODEL_JSON, tfjsModelJson(readTfjsModel(spec.path), WEIGHTS_BIN)]);
  } else if (floats && hasLayersForm(spec)) files.push([MODEL_JSON, await layersModelJson(spec, values)]);
  writeDirAtomically(resolve(dir), files);
  return dirBytes(dir);
}

/** A clustered tensor as its indices (4 bits each up to 16 values, else 8) and its codebook, the distinct values in order. */
function clusteredForm(
  name: string,
  values: Float32Array,
  clusters: number,
): { packed: Uint8Array; codebook: number[]; bits: 4 | 8 } {
  const codebook = [...new Set(values)].sort((a, b) => a - b);
  if (codebook.length > clusters) {
    throw new RangeError(
      `${name} holds ${codebook.length} distinct values: it is not clustered into ${clusters}`,
    );
  }
  const at = new Map(codebook.map((v, c) => [v, c]));
  const bits = clusters <= 16 ? 4 : 8;
  const packed = new Uint8Array(bits === 4 ? Math.ceil(values.length / 2) : values.length);
  values.forEach((v, i) => {
    const c = at.get(v) ?? 0;
    if (bits === 8) packed[i] = c;
    else packed[i >> 1] |= i % 2 === 0 ? c : c << 4;
  });
  return { packed, codebook, bits };
}

/** The values a clustered tensor's indices stand for. */
function unclustered(
  bytes: Uint8Array,
  size: number,
  bits: 4 | 8,
  codebook: readonly number[],
): Float32Array {
  return Float32Array.from({ length: size }, (_, i) => {
    const c = bits === 8 ? bytes[i] : (bytes[i >> 1] >> (i % 2 === 0 ? 0 : 4)) & 15;
    return codebook[c] ?? Number.NaN;
  });
}

/** Bytes of the files directly in `dir`: a model's size on disk. */
export function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/**
 * Reads a model directory `saveNetModel` wrote (the spec is validated, the layout checked against the Net), or a
 * plain tfjs layers-model directory of the user's own.
 */
export function loadNetModel(dir: string): NetModel {
  checkHost();
  const path = join(resolve(dir), KD_MODEL_JSON);
  // A plain tfjs layers-model directory (model.json, no kd-model.json): the user's own model as it was saved.
  if (!existsSync(path) && existsSync(join(resolve(dir), MODEL_JSON))) {
    const spec: ModelSpec = { type: 'tfjs', path: resolve(dir) };
    const { net, values } = readTfjsModel(spec.path);
    return { spec, net, values: values.map((v) => v.slice()) };
  }
  let raw: Partial<KdModelJson>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8')) as Partial<KdModelJson>;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? `no kd-launch model at ${dir}: ${path} does not exist (a directory written by a training job's output_dir)`
        : `${path} cannot be read: ${(err as Error).message}`,
    );
  }
  if (raw.format !== FORMAT || (raw.version !== VERSION && raw.version !== QUANTIZED_VERSION)) {
    throw new Error(
      `${path}: not a ${FORMAT} v${VERSION} or v${QUANTIZED_VERSION} file (format ${raw.format}, version ${raw.version})`,
    );
  }
  const parsed = ModelSpec.safeParse(raw.model);
  if (!parsed.success)
    throw new Error(`${path}: its model spec is invalid: ${parsed.error.issues[0]?.message}`);
  // A relative tfjs model path is relative to the model directory (saveNetModel writes '.').
  const spec =
    parsed.data.type === 'tfjs' ? { ...parsed.data, path: resolve(dir, parsed.data.path) } : parsed.data;
  const net = buildNet(spec);
  const params = netParams(net);
  const tensors = raw.tensors ?? [];
  const layoutOk =
    tensors.length === params.length &&
    params.every((p, i) => tensors[i].name === p.name && tensors[i].shape.join('x') === p.shape.join('x'));
  if (!layoutOk) throw new Error(`${path}: its tensors do not match the ${spec.type} its spec describes`);
  const weightsPath = join(resolve(dir), raw.weights ?? WEIGHTS_BIN);
  const bytes = readFileSync(weightsPath);
  const values = params.map((p, i) => {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const { offset: at, dtype, scales, bits, codebook } = tensors[i];
    const length =
      dtype === 'clustered' ? (bits === 4 ? Math.ceil(size / 2) : size) : dtype === 'int8' ? size : size * 4;
    if (!(at >= 0 && at + length <= bytes.length)) {
      throw new Error(`${weightsPath}: ${p.name} lies outside its ${bytes.length} bytes (truncated?)`);
    }
    // A copy: an aligned array of its own, not a view of the file buffer.
    const own = bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + length);
    if (dtype === 'clustered') {
      if (!codebook || (bits !== 4 && bits !== 8)) {
        throw new Error(`${path}: ${p.name} is clustered without a codebook or 4 or 8 index bits`);
      }
      return unclustered(new Uint8Array(own), size, bits, codebook);
    }
    if (dtype !== 'int8') return new Float32Array(own);
    const channels = p.shape[p.shape.length - 1];
    if (!scales || !(scales.length === 1 || scales.length === channels)) {
      throw new Error(`${path}: ${p.name} is int8 without one scale or one per channel`);
    }
    return dequantizeWeights({ ints: new Int8Array(own), scales: Float32Array.from(scales) });
  });
  const clusters = raw.clustering?.clusters;
  const q = raw.quantization;
  if (!q) return { spec, net, values, ...(clusters ? { clusters } : {}) };
  const weights = { bits: q.bits, perChannel: q.granularity === 'per_channel' };
  const activations = q.activations.map((a) => (a ? { scale: a.scale, zeroPoint: a.zero_point } : undefined));
  return { spec, net, values, quantization: { weights, activations } };
}

/**
 * The model in directory `dir` (an earlier stage's) as a run's starting point: its spec (the directory's own,
 * which a stage that removed units made smaller than the one it was given) and its Net, whose initial values are
 * the trained ones. With `layers`, the shallower model of only those layers (layer reduction), each kept block's
 * values as trained.
 */
export function startingFrom(dir: string, layers?: readonly number[]): { spec: ModelSpec; net: Net } {
  const { spec, net, values } = loadNetModel(dir);
  if (!layers) return { spec, net: withValues(net, values) };
  const reduced = reducedSpec(spec, layers);
  if ('issue' in reduced) throw new Error(`${dir}: ${reduced.issue}`);
  const firstParam = net.blocks.map((_, b) =>
    net.blocks.slice(0, b).reduce((n, x) => n + x.params.length, 0),
  );
  const kept = keptBlocks(spec, layers).flatMap((b) =>
    values.slice(firstParam[b], firstParam[b] + net.blocks[b].params.length),
  );
  const student = buildNet(reduced.spec);
  const fits = netParams(student).every((p, i) => p.shape.reduce((a, n) => a * n, 1) === kept[i]?.length);
  if (!fits)
    throw new Error(
      `${dir}: layers [${layers.join(', ')}] do not make the model ${reduced.spec.type} they should`,
    );
  return { spec: reduced.spec, net: withValues(student, kept) };
}

/** `net` whose initial values are `values` (one array per parameter, `netParams` order), whatever the seed. */
export function withValues(net: Net, values: readonly Float32Array[]): Net {
  return { ...net, init: () => values.map((v) => v.slice()) };
}
