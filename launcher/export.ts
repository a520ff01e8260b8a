/**
 * `kd-launch export CKPT OUT`: one checkpoint (a checkpoint directory, whose `latest` is followed, or one
 * `step-N` directory) → one consolidated model directory, as a training job's `output_dir` writes it: a tfjs
 * `model.json` for every model that has a layers form (the zoo's MLP and CNN; a user's tfjs model in its own
 * topology), a kd-launch model directory for all. Every rank's owned range of the flat parameters is read and
 * stitched together; the model is built from the spec stored in the checkpoint's header (a user's model from the
 * path the header names), so nothing else is needed.
 */
import { resolve } from 'node:path';
import { tf } from '../src/backend/tf.ts';
import { ModelSpec } from '../src/config/schema.ts';
import { consolidate, readAllRanks, resolveCheckpoint } from '../src/engine/checkpoint.ts';
import { netParams } from '../src/engine/net.ts';
import { buildNet } from '../src/models/build.ts';
import { saveNetModel } from '../src/models/net-dir.ts';

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
  const { params, slots } = consolidate(ranks);
  const net = buildNet(parsed.data);
  const specs = netParams(net);
  // The objective's own parameters (distillation's projections) follow the net's: they are not part of the model.
  const same = specs.every(
    (p, i) => slots[i] !== undefined && p.shape.join('x') === slots[i].shape.join('x'),
  );
  if (!same) {
    throw new Error(`checkpoint ${stepDir}: its tensor layout does not match the model its header describes`);
  }
  await tf.ready();
  const values = specs.map((_, i) => params.slice(slots[i].offset, slots[i].offset + slots[i].size));
  const out = resolve(outDir);
  await saveNetModel(out, parsed.data, values);
  const count = values.reduce((n, v) => n + v.length, 0);
  return { checkpoint: stepDir, step: first.step, parameters: count, outDir: out };
}
