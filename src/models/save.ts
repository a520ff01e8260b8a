/**
 * The tfjs layers-model format on the file system without `@tensorflow/tfjs-node`: a directory holding
 * `model.json` (`modelTopology` as `model.toJSON(null, false)` writes it, and a `weightsManifest`) and one
 * `weights.bin` — what `tfjs-node`'s `file://` handler and `tensorflowjs_converter` write, so either side reads
 * the other's. Saving is atomic: the files go to a sibling temporary directory, are fsynced, and the directory
 * is renamed into place; a crash leaves the previous model (or none), never a half-written one.
 *
 *   await saveModel(model, 'out/model');
 *   const same = await tf.loadLayersModel(modelDirHandler('out/model'));   // or loadModel('out/model')
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tf } from '../backend/tf.ts';
import { writeDirAtomically } from '../base/durable-file.ts';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/**
 * An IOHandler for one model directory: `model.save(modelDirHandler(dir))` writes it (atomically), and
 * `tf.loadLayersModel(modelDirHandler(dir))` reads it back.
 */
export function modelDirHandler(dir: string): tf.io.IOHandler {
  const path = resolve(dir);
  return {
    save: async (artifacts) => writeModelDir(path, artifacts),
    load: async () => readModelDir(path),
  };
}

/** Saves a layers model as a tfjs model directory (`model.json` + `weights.bin`), atomically. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<tf.io.SaveResult> {
  return model.save(modelDirHandler(dir));
}

/** Loads a tfjs layers-model directory that `saveModel` (or tfjs-node, or the converter) wrote. */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(modelDirHandler(dir));
}

function writeModelDir(dir: string, artifacts: tf.io.ModelArtifacts): tf.io.SaveResult {
  const topology = artifacts.modelTopology;
  if (topology === undefined || topology instanceof ArrayBuffer) {
    throw new Error('saveModel: a layers model has a JSON topology; this one has none');
  }
  const weightData = artifacts.weightData
    ? new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData))
    : new Uint8Array(0);
  const modelJson: tf.io.ModelJSON = {
    modelTopology: topology,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
    ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
    ...(artifacts.signature ? { signature: artifacts.signature } : {}),
    ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
    ...(artifacts.modelInitializer ? { modelInitializer: artifacts.modelInitializer } : {}),
  };
  const json = JSON.stringify(modelJson);

  writeDirAtomically(dir, [
    [WEIGHTS_BIN, weightData],
    [MODEL_JSON, json],
  ]);
  return {
    modelArtifactsInfo: {
      dateSaved: new Date(),
      modelTopologyType: 'JSON',
      modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology)),
      weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? [])),
      weightDataBytes: weightData.byteLength,
    },
  };
}

async function readModelDir(dir: string): Promise<tf.io.ModelArtifacts> {
  const jsonPath = join(dir, MODEL_JSON);
  let modelJson: tf.io.ModelJSON;
  try {
    modelJson = JSON.parse(readFileSync(jsonPath, 'utf8')) as tf.io.ModelJSON;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? `no model at ${dir}: ${jsonPath} does not exist`
        : `${jsonPath} is not a tfjs model.json: ${(err as Error).message}`,
    );
  }
  if (modelJson.modelTopology === undefined || !Array.isArray(modelJson.weightsManifest)) {
    throw new Error(`${jsonPath} is not a tfjs layers model (no modelTopology or weightsManifest)`);
  }
  return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
    const specs: tf.io.WeightsManifestEntry[] = [];
    const buffers: ArrayBuffer[] = [];
    for (const group of manifest) {
      specs.push(...group.weights);
      for (const p of group.paths) {
        const file = join(dir, p);
        let bytes: Buffer;
        try {
          bytes = readFileSync(file);
        } catch {
          throw new Error(`${jsonPath} names weights file ${p}, which cannot be read (${file})`);
        }
        buffers.push(
          bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
        );
      }
    }
    const expected = specs.reduce((n, s) => n + weightBytes(s), 0);
    const data = tf.io.CompositeArrayBuffer.join(buffers);
    if (data.byteLength !== expected) {
      throw new Error(
        `${dir}: the weights files hold ${data.byteLength} bytes, model.json describes ${expected}`,
      );
    }
    return [specs, data];
  });
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, float16: 2 };

function weightBytes(spec: tf.io.WeightsManifestEntry): number {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if (spec.quantization) {
    const q = spec.quantization.dtype;
    return n * (q === 'uint8' ? 1 : 2);
  }
  return n * (DTYPE_BYTES[spec.dtype] ?? 4);
}
