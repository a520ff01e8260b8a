/**
 * `model.onnx` beside a model directory's `model.json`: written from the tfjs layers model the directory holds,
 * then run in onnxruntime-node on a batch of inputs and compared with the tfjs model, so a file that would
 * predict something else is never handed over as if it were the model.
 */
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../../backend/tf.ts';
import { fsyncDir, writeFileSynced } from '../../base/durable-file.ts';
import { packageVersion } from '../../base/package-root.ts';
import { Rng } from '../../base/rng.ts';
import type { ModelSpec } from '../../config/schema.ts';
import { type AffineQuantization, fakeQuantAffine, onWeightGrid } from '../../engine/quantization.ts';
import { buildNet, toLayersModel } from '../build.ts';
import type { SavedQuantization } from '../net-dir.ts';
import { loadModel, MODEL_JSON } from '../save.ts';
import { layersToOnnx, OnnxExportError, type OnnxQuantization } from './from-layers.ts';
import { loadOnnxRuntime, runOnnx } from './runtime.ts';

export const MODEL_ONNX = 'model.onnx';
/** Inputs the check runs: a batch of uniform [0, 1) values, from a fixed seed. */
const CHECK_BATCH = 16;
/** Largest difference accepted between the two runtimes, relative to the output's largest magnitude (≥ 1). */
const CHECK_TOLERANCE = 1e-4;
/**
 * The same for an int8 model: onnxruntime's integer kernels sum in another order, and a sum on a rounding edge of
 * the next layer's quantizer moves that activation by one step.
 */
const QUANTIZED_TOLERANCE = 0.05;

export interface OnnxExport {
  path: string;
  /** The file's size. */
  bytes: number;
  /** The file's contents, as written (to run it without reading it back). */
  data: Uint8Array;
  /** Max |onnx − tfjs| over the check batch, or why the file was not run. */
  check: { maxAbsDiff: number; inputs: number; runtime: string } | { skipped: string };
}

/** How a model that kd-launch quantized is written: its weights' quantization, its kernel layers' input quantizers. */
export function onnxQuantizationOf(saved: SavedQuantization): OnnxQuantization {
  return {
    weights: saved.weights,
    inputs: saved.activations.filter((a): a is AffineQuantization => a !== undefined),
  };
}

/**
 * Writes `dir`/model.onnx from a tfjs layers model (`model`, else `dir`/model.json) and checks it; with
 * `quantization`, int8 QDQ, checked against the model with its weights and inputs fake-quantized. Throws
 * `OnnxExportError` for a model without an ONNX form.
 */
export async function writeOnnx(
  dir: string,
  options: { model?: tf.LayersModel; quantization?: OnnxQuantization } = {},
): Promise<OnnxExport> {
  if (!options.model && !existsSync(join(dir, MODEL_JSON)))
    throw new OnnxExportError(
      `${dir} has no ${MODEL_JSON}: only a model with a tfjs layers form (the MLP, the CNN, a tfjs model of your own) is exported to ONNX`,
    );
  const model = options.model ?? (await loadModel(dir));
  try {
    const bytes = layersToOnnx(model, packageVersion(), options.quantization);
    const path = join(dir, MODEL_ONNX);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSynced(tmp, bytes);
    renameSync(tmp, path);
    fsyncDir(dir);
    return {
      path,
      bytes: bytes.byteLength,
      data: bytes,
      check: await check(model, bytes, options.quantization),
    };
  } finally {
    if (!options.model) model.dispose();
  }
}

/**
 * What the model computes on `x` as kd-launch evaluates it: its layers in order, each kernel layer's input through
 * its 8-bit quantizer when the model is quantized (the weights already are).
 */
export function referenceOutput(
  model: tf.LayersModel,
  x: tf.Tensor,
  quantization?: OnnxQuantization,
): tf.Tensor {
  if (!quantization) return model.predict(x) as tf.Tensor;
  return tf.tidy(() => {
    let h = x;
    let k = 0;
    for (const layer of model.layers) {
      if (layer.getClassName() === 'InputLayer') continue;
      if (layer.weights.some((w) => w.originalName.endsWith('kernel')))
        h = fakeQuantAffine(h, quantization.inputs[k++]);
      h = layer.apply(h) as tf.Tensor;
    }
    return h;
  });
}

async function check(
  model: tf.LayersModel,
  bytes: Uint8Array,
  quantization: OnnxQuantization | undefined,
): Promise<OnnxExport['check']> {
  const { runtime, why } = await loadOnnxRuntime();
  if (!runtime) return { skipped: why ?? 'onnxruntime-node is not installed' };
  const shape = model.inputs[0].shape.map((d) => d ?? CHECK_BATCH);
  const rng = new Rng(0x0a11);
  const x = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.next());
  const expected = tf.tidy(
    () => referenceOutput(model, tf.tensor(x, shape), quantization).dataSync() as Float32Array,
  );
  const got = (await runOnnx(runtime, bytes, x, shape)).values;
  let maxAbsDiff = got.length === expected.length ? 0 : Number.POSITIVE_INFINITY;
  let scale = 1;
  for (let i = 0; i < expected.length; i++) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  const tolerance = quantization ? QUANTIZED_TOLERANCE : CHECK_TOLERANCE;
  if (!(maxAbsDiff <= tolerance * scale))
    throw new Error(
      `${MODEL_ONNX} does not compute what the ${quantization ? 'quantized ' : ''}tfjs model does (max difference ${maxAbsDiff} on ${shape[0]} inputs): please report this model`,
    );
  return { maxAbsDiff, inputs: shape[0], runtime: `onnxruntime-node ${runtime.env.versions.common}` };
}

/**
 * `dir`/model.onnx of the model kd-launch wrote there: from its model.json, or for a quantized or clustered model
 * (whose directory has none) from the zoo's layers form of its values, int8 QDQ when quantized.
 */
export async function writeModelOnnx(
  dir: string,
  spec: ModelSpec,
  values: readonly Float32Array[],
  quantization: SavedQuantization | undefined,
): Promise<OnnxExport> {
  if (!quantization && existsSync(join(dir, MODEL_JSON))) return writeOnnx(dir);
  if (spec.type !== 'mlp' && spec.type !== 'cnn')
    throw new OnnxExportError(
      `${dir}: a ${quantization ? 'quantized' : 'clustered'} ${spec.type} model has no ONNX form here (the MLP and the CNN have one)`,
    );
  // The layers form with the weights the quantized forward uses, as the check's reference.
  const weights = quantization ? onWeightGrid(buildNet(spec), values, quantization.weights) : values;
  const model = toLayersModel(spec, weights);
  try {
    return await writeOnnx(dir, {
      model,
      ...(quantization ? { quantization: onnxQuantizationOf(quantization) } : {}),
    });
  } finally {
    model.dispose();
  }
}
