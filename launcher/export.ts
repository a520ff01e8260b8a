/**
 * `kd-launch export CKPT OUT`: one checkpoint (a checkpoint directory, whose `latest` is followed, or one
 * `step-N` directory) → one consolidated tfjs layers-model directory. Every rank's owned range of the flat
 * parameters is read and stitched together; the model is built from the spec stored in the checkpoint's header,
 * so nothing but the checkpoint is needed.
 */
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ModelSpec } from '../src/config/schema.ts';
import { consolidateParams, readAllRanks, resolveCheckpoint } from '../src/engine/checkpoint.ts';
import { buildModel, trainableVariables } from '../src/models/build.ts';
import { saveModel } from '../src/models/save.ts';

export interface ExportResult {
  /** The step directory exported. */
  checkpoint: string;
  step: number;
  parameters: number;
  outDir: string;
}

export async function exportCheckpoint(ckptPath: string, outDir: string): Promise<ExportResult> {
  const stepDir = resolveCheckpoint(resolve(ckptPath));
  const ranks = readAllRanks(stepDir);
  const first = ranks[0];
  const parsed = ModelSpec.safeParse(first.meta['model']);
  if (!parsed.success) {
    throw new Error(
      `checkpoint ${stepDir} has no model spec in its header: it was not written by the training job`,
    );
  }
  const seed = typeof first.meta['seed'] === 'number' ? first.meta['seed'] : 0;
  const flat = consolidateParams(ranks);
  await tf.ready();
  const model = buildModel(parsed.data, seed);
  try {
    const variables = trainableVariables(model);
    if (model.nonTrainableWeights.length > 0) {
      throw new Error('export: models with non-trainable weights are not checkpointed yet');
    }
    if (
      variables.length !== first.slots.length ||
      variables.some((v, i) => v.shape.join('x') !== first.slots[i].shape.join('x'))
    ) {
      throw new Error(
        `checkpoint ${stepDir}: its tensor layout does not match the model its header describes`,
      );
    }
    variables.forEach((v, i) => {
      const { offset, size, shape } = first.slots[i];
      tf.tidy(() => v.assign(tf.tensor(flat.slice(offset, offset + size), [...shape], 'float32')));
    });
    const out = resolve(outDir);
    await saveModel(model, out);
    return { checkpoint: stepDir, step: first.step, parameters: flat.length, outDir: out };
  } finally {
    model.dispose();
  }
}
