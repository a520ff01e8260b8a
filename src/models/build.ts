import type * as tf from '@tensorflow/tfjs';
import type { ModelSpec } from '../config/schema.ts';
import { buildCnn } from './cnn.ts';
import { buildMlp } from './mlp.ts';

/** A model of the zoo from its job-file spec, with seeded (rank-independent) initial weights. */
export function buildModel(spec: ModelSpec, seed: number): tf.Sequential {
  switch (spec.type) {
    case 'mlp':
      return buildMlp(spec, seed);
    case 'cnn':
      return buildCnn(spec, seed);
  }
}

/** The trainable variables of a model, in layer order (the flat parameter layout follows it). */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => w.read() as tf.Variable);
}
