import type * as tf from '@tensorflow/tfjs';
import type { ModelSpec } from '../config/schema.ts';
import type { Net } from '../engine/net.ts';
import { cnnLayers, cnnNet } from './cnn.ts';
import { mlpLayers, mlpNet } from './mlp.ts';
import { moduleNet } from './model-module.ts';
import { setLayersWeights } from './net-layers.ts';
import { readTfjsModel } from './tfjs-dir.ts';
import { transformerNet } from './transformer.ts';

/** A model of the zoo from its job-file spec, as the Net the engine trains. */
export function buildNet(spec: ModelSpec): Net {
  switch (spec.type) {
    case 'mlp':
      return mlpNet(spec);
    case 'cnn':
      return cnnNet(spec);
    case 'transformer':
      return transformerNet(spec);
    case 'tfjs':
      return readTfjsModel(spec.path).net;
    case 'module':
      return moduleNet(spec);
  }
}

/** The zoo model's tfjs layers form, zero-initialised. */
function layersModel(spec: ModelSpec): tf.Sequential {
  switch (spec.type) {
    case 'mlp':
      return mlpLayers(spec);
    case 'cnn':
      return cnnLayers(spec);
    case 'transformer':
      // Attention has no tfjs layers equivalent in the zoo: a Transformer is saved as a kd-launch model
      // directory (src/models/net-dir.ts) only.
      throw new Error('the Transformer has no tfjs layers form: use its kd-launch model directory');
    case 'tfjs':
      // Written from the user's own model.json (src/models/tfjs-dir.ts), never rebuilt as layers here.
      throw new Error('a tfjs model directory is exported from its own model.json');
    case 'module':
      // A layers model built in code trains as a tfjs model directory; a Net has no layers form.
      throw new Error('a Net built in code has no tfjs layers form: use its kd-launch model directory');
  }
}

/**
 * The Net of `spec` with parameter `values` (one array per parameter, in `netParams` order, as `Net.init`
 * returns them) as a tfjs layers model: what `saveModel` writes for export, and what `tf.loadLayersModel`
 * loads back without kd-launch. It predicts what the Net's forward computes when not training.
 */
export function toLayersModel(spec: ModelSpec, values: readonly Float32Array[]): tf.Sequential {
  const model = layersModel(spec);
  try {
    setLayersWeights(model, values);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/** The layers model of `spec` with the Net's initial weights for `seed` (`buildNet(spec).init(seed)`). */
export function buildModel(spec: ModelSpec, seed: number): tf.Sequential {
  return toLayersModel(spec, buildNet(spec).init(seed));
}

/** The trainable variables of a model, in layer order (the flat parameter layout follows it). */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}
