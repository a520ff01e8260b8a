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
import { loadModel, MODEL_JSON } from '../save.ts';
import { layersToOnnx, OnnxExportError } from './from-layers.ts';
import { loadOnnxRuntime, runOnnx } from './runtime.ts';

export const MODEL_ONNX = 'model.onnx';
/** Inputs the check runs: a batch of uniform [0, 1) values, from a fixed seed. */
const CHECK_BATCH = 16;
/** Largest difference accepted between the two runtimes, relative to the output's largest magnitude (≥ 1). */
const CHECK_TOLERANCE = 1e-4;

export interface OnnxExport {
  path: string;
  bytes: number;
  /** Max |onnx − tfjs| over the check batch, or why the file was not run. */
  check: { maxAbsDiff: number; inputs: number; runtime: string } | { skipped: string };
}

/** Writes `dir`/model.onnx from `dir`/model.json and checks it; throws `OnnxExportError` for a model without one. */
export async function writeOnnx(dir: string): Promise<OnnxExport> {
  if (!existsSync(join(dir, MODEL_JSON)))
    throw new OnnxExportError(
      `${dir} has no ${MODEL_JSON}: only a model with a tfjs layers form (the MLP, the CNN, a tfjs model of your own) is exported to ONNX`,
    );
  const model = await loadModel(dir);
  try {
    const bytes = layersToOnnx(model, packageVersion());
    const path = join(dir, MODEL_ONNX);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSynced(tmp, bytes);
    renameSync(tmp, path);
    fsyncDir(dir);
    return { path, bytes: bytes.byteLength, check: await check(model, bytes) };
  } finally {
    model.dispose();
  }
}

async function check(model: tf.LayersModel, bytes: Uint8Array): Promise<OnnxExport['check']> {
  const { runtime, why } = await loadOnnxRuntime();
  if (!runtime) return { skipped: why ?? 'onnxruntime-node is not installed' };
  const shape = model.inputs[0].shape.map((d) => d ?? CHECK_BATCH);
  const rng = new Rng(0x0a11);
  const x = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.next());
  const expected = tf.tidy(
    () => (model.predict(tf.tensor(x, shape)) as tf.Tensor).dataSync() as Float32Array,
  );
  const got = (await runOnnx(runtime, bytes, x, shape)).values;
  let maxAbsDiff = got.length === expected.length ? 0 : Number.POSITIVE_INFINITY;
  let scale = 1;
  for (let i = 0; i < expected.length; i++) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  if (!(maxAbsDiff <= CHECK_TOLERANCE * scale))
    throw new Error(
      `${MODEL_ONNX} does not compute what the tfjs model does (max difference ${maxAbsDiff} on ${shape[0]} inputs): please report this model`,
    );
  return { maxAbsDiff, inputs: shape[0], runtime: `onnxruntime-node ${runtime.env.versions.common}` };
}
