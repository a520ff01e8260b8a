/**
 * What BatchNormalization costs a training step, one process: a user's tfjs CNN (Conv2D → BatchNormalization → ReLU,
 * twice, then Dense) against the same CNN without its BatchNormalization layers, both read from model.json as a
 * user's model is. Without BatchNormalization the step is one backward over the whole net (the limit); with it the
 * net trains block-wise (a segment per BatchNormalization, the forward recomputed in the backward, the statistics
 * summed over the ranks: a no-op at world 1, a 2 × 2C + 1-float all-reduce per layer at world N). The same CNN
 * without BatchNormalization under activation checkpointing (every block a segment) separates the recomputation
 * from BatchNormalization's own arithmetic, and tfjs' own training of the CNN with BatchNormalization
 * (`optimizer.minimize` over `model.apply(x, {training: true})`) is the reference for the layer's arithmetic. All
 * from the same run.
 *
 *   npx tsx bench/batch-norm.ts [--json] [--batch 128] [--steps 10]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend/select.ts';
import { Rng } from '../src/base/rng.ts';
import { ProcessGroup } from '../src/comm/process-group.ts';
import { Engine } from '../src/engine/engine.ts';
import { constantLr } from '../src/engine/lr-schedule.ts';
import { saveModel } from '../src/models/save.ts';
import { readTfjsModel } from '../src/models/tfjs-dir.ts';
import { softmaxCrossEntropy } from '../src/objectives/cross-entropy.ts';
import { fixedBatch, flag } from './common.ts';

const JSON_ONLY = process.argv.includes('--json');
const BATCH = flag('batch', 128);
const STEPS = flag('steps', 10);
const CLASSES = 10;

const backend = await selectBackend('auto');
const pg = await ProcessGroup.alone();
const rng = new Rng(1);
const X = Float32Array.from({ length: BATCH * 28 * 28 }, () => rng.next());
const Y = Int32Array.from({ length: BATCH }, () => rng.nextInt(CLASSES));
const dir = mkdtempSync(join(tmpdir(), 'kd-bench-bn-'));

/** The CNN, with or without its BatchNormalization layers. */
function cnnModel(norm: boolean): tf.Sequential {
  const layers: tf.layers.Layer[] = [];
  for (const [i, filters] of [16, 32].entries()) {
    layers.push(
      tf.layers.conv2d({
        ...(i === 0 ? { inputShape: [28, 28, 1] } : {}),
        filters,
        kernelSize: 3,
        strides: 2,
        useBias: !norm,
      }),
    );
    if (norm) layers.push(tf.layers.batchNormalization());
    layers.push(tf.layers.reLU());
  }
  layers.push(tf.layers.flatten(), tf.layers.dense({ units: CLASSES }));
  return tf.sequential({ layers });
}

/** The CNN saved as a user's model directory. */
async function cnn(norm: boolean): Promise<string> {
  const model = cnnModel(norm);
  const path = join(dir, norm ? 'bn' : 'plain');
  await saveModel(model, path);
  model.dispose();
  return path;
}

async function measure(path: string, checkpointEvery?: number): Promise<number> {
  const { net } = readTfjsModel(path);
  const engine = new Engine({
    net,
    seed: 1,
    optimizer: { type: 'SGD', params: { lr: 0.01, momentum: 0, nesterov: false, weight_decay: 0 } },
    lrSchedule: constantLr(0.01),
    pg,
    batch: { microBatch: BATCH, accumulation: 1, dataParallel: 1, trainBatchSize: BATCH },
    activationCheckpointing: checkpointEvery ? { everyNLayers: checkpointEvery } : undefined,
  });
  const micro = fixedBatch(X, [BATCH, 28, 28, 1], Y);
  await engine.step(micro); // warm-up: kernels, first allocations
  const t0 = performance.now();
  for (let s = 0; s < STEPS; s++) await engine.step(micro);
  const ms = (performance.now() - t0) / STEPS;
  engine.dispose();
  return ms;
}

/** tfjs' own training step of the CNN with BatchNormalization. */
function measureTfjs(): number {
  const model = cnnModel(true);
  const sgd = tf.train.sgd(0.01);
  const x = tf.tensor4d(X, [BATCH, 28, 28, 1]);
  const y = tf.tensor1d(Y, 'int32');
  const step = () =>
    tf.tidy(() => {
      sgd.minimize(() => softmaxCrossEntropy(model.apply(x, { training: true }) as tf.Tensor, y));
    });
  step();
  const t0 = performance.now();
  for (let s = 0; s < STEPS; s++) step();
  // minimize's update is asynchronous on some backends: a read waits for it.
  model.getWeights()[0].dataSync();
  const ms = (performance.now() - t0) / STEPS;
  tf.dispose([x, y]);
  model.dispose();
  return ms;
}

const plain = await cnn(false);
const bn = await cnn(true);
const rows = [
  { run: 'without BatchNormalization, one-pass backward (the limit)', ms: await measure(plain) },
  { run: 'without BatchNormalization, block-wise (every block recomputed)', ms: await measure(plain, 1) },
  { run: 'with BatchNormalization (SyncBN, block-wise)', ms: await measure(bn) },
  { run: "with BatchNormalization, tfjs' own training (model.apply, minimize)", ms: measureTfjs() },
];
rmSync(dir, { recursive: true, force: true });
await pg.close();
if (JSON_ONLY) console.log(JSON.stringify({ backend: backend.name, batch: BATCH, steps: STEPS, rows }));
else {
  console.log(`backend ${backend.name}, micro-batch ${BATCH}, ${STEPS} steps each, world 1`);
  for (const r of rows) {
    console.log(
      `${r.run.padEnd(68)} ${r.ms.toFixed(1).padStart(7)} ms/step  ${(r.ms / rows[0].ms).toFixed(2)}×`,
    );
  }
}
