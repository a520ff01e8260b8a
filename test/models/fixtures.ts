/** Test models shared by the model tests: a small CNN spec, and a layers model saved and loaded in memory. */
import * as tf from '@tensorflow/tfjs';
import { ModelSpec } from '../../src/config/schema.ts';
import type { CnnSpec } from '../../src/models/shapes.ts';

/** 12×12×2 images: conv 3×3 same (6) → pool 2 → conv 3×3 valid, no pool (4) → flatten 64 → dense 8 → 3 classes. */
export const SMALL_CNN = ModelSpec.parse({
  type: 'cnn',
  input: [12, 12, 2],
  conv: [
    { filters: 6, kernel: 3 },
    { filters: 4, kernel: 3, padding: 'valid', pool: 1 },
  ],
  dense: [8],
  classes: 3,
  dropout: 0.25,
}) as CnnSpec;

/** `model` through the tfjs save/load format (in memory): what another program would load. */
export async function saveAndLoad(model: tf.LayersModel): Promise<tf.LayersModel> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!saved) throw new Error('the model saved nothing');
  return tf.loadLayersModel(tf.io.fromMemory(saved));
}
