/**
 * Activation checkpointing on a deep MLP, one process: the peak of tensor memory during a training step
 * (`tf.profile`'s peakBytes, parameters included) and the step time, without checkpointing and with
 * `every_n_layers` 1, 2 and 4, all from the same run. Recomputing each segment's forward in the backward costs
 * about one more forward; what it saves is the activations of every block but the segment boundaries.
 *
 *   npx tsx bench/activation-checkpointing.ts [--json] [--layers 16] [--width 1024] [--batch 256] [--steps 5]
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend/select.ts';
import { Rng } from '../src/base/rng.ts';
import { ProcessGroup } from '../src/comm/process-group.ts';
import { Engine } from '../src/engine/engine.ts';
import { constantLr } from '../src/engine/lr-schedule.ts';
import { mlpNet } from '../src/models/mlp.ts';
import { fixedBatch, flag } from './common.ts';

const JSON_ONLY = process.argv.includes('--json');
const LAYERS = flag('layers', 16);
const WIDTH = flag('width', 1024);
const BATCH = flag('batch', 256);
const STEPS = flag('steps', 5);
const IN = 784;
const CLASSES = 10;

const backend = await selectBackend('auto');
const pg = await ProcessGroup.alone();
const rng = new Rng(1);
const X = Float32Array.from({ length: BATCH * IN }, () => rng.next());
const Y = Int32Array.from({ length: BATCH }, () => rng.nextInt(CLASSES));
const layers = [IN, ...Array.from({ length: LAYERS }, () => WIDTH), CLASSES];

async function measure(every: number | undefined) {
  const engine = new Engine({
    net: mlpNet({ type: 'mlp', layers, activation: 'relu', dropout: 0 }),
    seed: 1,
    optimizer: { type: 'SGD', params: { lr: 0.01, momentum: 0, nesterov: false, weight_decay: 0 } },
    lrSchedule: constantLr(0.01),
    pg,
    batch: { microBatch: BATCH, accumulation: 1, dataParallel: 1, trainBatchSize: BATCH },
    activationCheckpointing: every ? { everyNLayers: every } : undefined,
  });
  const micro = fixedBatch(X, [BATCH, IN], Y);
  await engine.step(micro); // warm-up: kernels, first allocations
  const base = tf.memory().numBytes;
  let peak = 0;
  const t0 = performance.now();
  for (let s = 0; s < STEPS; s++) {
    const info = await tf.profile(async () => {
      await engine.step(micro);
    });
    peak = Math.max(peak, info.peakBytes);
  }
  const stepMs = (performance.now() - t0) / STEPS;
  engine.dispose();
  return { every: every ?? 0, peak_bytes: peak, resident_bytes: base, step_ms: Number(stepMs.toFixed(1)) };
}

const rows = [];
for (const every of [undefined, 1, 2, 4]) rows.push(await measure(every));
const off = rows[0];
for (const r of rows) {
  const row = {
    model: `mlp-${LAYERS}x${WIDTH}`,
    batch: BATCH,
    backend: backend.name,
    activation_checkpointing: r.every === 0 ? 'off' : `every_n_layers ${r.every}`,
    peak_mib: Number((r.peak_bytes / 2 ** 20).toFixed(1)),
    peak_vs_off: Number((r.peak_bytes / off.peak_bytes).toFixed(3)),
    step_ms: r.step_ms,
    time_vs_off: Number((r.step_ms / off.step_ms).toFixed(3)),
  };
  console.log(
    JSON_ONLY
      ? JSON.stringify(row)
      : `${row.model} batch ${row.batch} ${row.backend}  ${row.activation_checkpointing.padEnd(16)}  peak ${row.peak_mib.toFixed(1).padStart(7)} MiB (${(row.peak_vs_off * 100).toFixed(0)}% of off)  step ${row.step_ms.toFixed(1).padStart(7)} ms (${row.time_vs_off.toFixed(2)}× off)`,
  );
}
await pg.close();
