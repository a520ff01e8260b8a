/**
 * `kd-launch export SRC OUT [--onnx]`: one checkpoint (a checkpoint directory, whose `latest` is followed, or one
 * `step-N` directory) or one model directory → one consolidated model directory, as a training job's
 * `output_dir` writes it: a tfjs `model.json` for every model that has a layers form (the zoo's MLP and CNN; a
 * user's tfjs model in its own topology), a kd-launch model directory for all, and with `--onnx` a `model.onnx`
 * checked in onnxruntime-node. A checkpoint's every rank's owned range of the flat parameters is read and
 * stitched together; the model is built from the spec stored in the checkpoint's header (a user's model from the
 * path the header names), so nothing else is needed.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { selectBackend } from '../src/backend/select.ts';
import { ModelSpec } from '../src/config/schema.ts';
import { consolidate, readAllRanks, resolveCheckpoint } from '../src/engine/checkpoint.ts';
import { netParams } from '../src/engine/net.ts';
import { buildNet, toLayersModel } from '../src/models/build.ts';
import { KD_MODEL_JSON, loadNetModel, saveNetModel } from '../src/models/net-dir.ts';
import { type OnnxExport, writeModelOnnx } from '../src/models/onnx/export.ts';
import { OnnxExportError } from '../src/models/onnx/from-layers.ts';
import { loadModel, MODEL_JSON } from '../src/models/save.ts';
import { saveQuantizedTfjs, type TfjsWeightDtype } from '../src/models/tfjs-quantized.ts';

export interface ExportResult {
  /** What was exported: the checkpoint's step directory, or the model directory. */
  source: string;
  /** The checkpoint's step; undefined for a model directory. */
  step?: number;
  parameters: number;
  outDir: string;
  onnx?: OnnxExport;
  /** `--quantize`: the tfjs directory with quantized weights, and its bytes. */
  tfjs?: { dir: string; bytes: number };
}

/** A model directory (a job's output_dir, a stage's model, a tfjs model of your own) rather than a checkpoint. */
function isModelDir(path: string): boolean {
  return existsSync(join(path, KD_MODEL_JSON)) || existsSync(join(path, MODEL_JSON));
}

/** The model a checkpoint holds: its spec from the header, its parameters stitched from every rank. */
function readCheckpointModel(stepDir: string): { spec: ModelSpec; values: Float32Array[]; step: number } {
  const ranks = readAllRanks(stepDir);
  const first = ranks[0];
  const parsed = ModelSpec.safeParse(first.meta['model']);
  if (!parsed.success) {
    throw new Error(
      `checkpoint ${stepDir} has no model spec in its header: it was not written by the training job`,
    );
  }
  const { params, slots } = consolidate(ranks);
  const specs = netParams(buildNet(parsed.data));
  // The objective's own parameters (distillation's projections) follow the net's: they are not part of the model.
  const same = specs.every(
    (p, i) => slots[i] !== undefined && p.shape.join('x') === slots[i].shape.join('x'),
  );
  if (!same) {
    throw new Error(`checkpoint ${stepDir}: its tensor layout does not match the model its header describes`);
  }
  const values = specs.map((_, i) => params.slice(slots[i].offset, slots[i].offset + slots[i].size));
  return { spec: parsed.data, values, step: first.step };
}

/** The layers form ONNX is written from: the zoo's MLP and CNN, and a tfjs model of the user's own. */
function refuseWithoutLayersForm(spec: ModelSpec, source: string): void {
  if (spec.type === 'mlp' || spec.type === 'cnn' || spec.type === 'tfjs') return;
  throw new OnnxExportError(
    `${source}: a ${spec.type === 'module' ? 'model built in code' : spec.type} has no tfjs layers form to write as ONNX (the MLP, the CNN and a tfjs model of your own have one)`,
  );
}

export async function exportModel(
  srcPath: string,
  outDir: string,
  options: { onnx?: boolean; quantize?: TfjsWeightDtype } = {},
): Promise<ExportResult> {
  const src = resolve(srcPath);
  if (!existsSync(src))
    throw new Error(`${src} does not exist (a checkpoint or a model directory to export)`);
  if (src === resolve(outDir)) throw new Error(`${src}: the output directory is the source itself`);
  const fromModel = isModelDir(src);
  const source = fromModel ? src : resolveCheckpoint(src);
  const { spec, values, step, quantization, clusters } = fromModel
    ? { ...loadNetModel(src), step: undefined }
    : { ...readCheckpointModel(source), quantization: undefined, clusters: undefined };
  if (options.onnx || options.quantize) refuseWithoutLayersForm(spec, source);
  // The backend a worker would pick: the cpu backend also prints tfjs' advert for tfjs-node on first use.
  await selectBackend('auto');
  const out = resolve(outDir);
  await saveNetModel(out, spec, values, {
    ...(quantization ? { quantization } : {}),
    ...(clusters ? { clusters } : {}),
  });
  const parameters = values.reduce((n, v) => n + v.length, 0);
  const onnx = options.onnx ? await writeModelOnnx(out, spec, values, quantization) : undefined;
  const tfjs = options.quantize && (await writeQuantizedTfjs(out, spec, values, options.quantize));
  return {
    source,
    ...(step === undefined ? {} : { step }),
    parameters,
    outDir: out,
    ...(onnx ? { onnx } : {}),
    ...(tfjs ? { tfjs } : {}),
  };
}

/** `out`/tfjs-<dtype>: the model's tfjs layers form with tfjs' quantized weights, as tensorflowjs_converter writes it. */
async function writeQuantizedTfjs(
  out: string,
  spec: ModelSpec,
  values: readonly Float32Array[],
  dtype: TfjsWeightDtype,
): Promise<{ dir: string; bytes: number }> {
  // A user's tfjs model has its own model.json in `out`; the zoo's layers form is built from the values.
  const model = spec.type === 'tfjs' ? await loadModel(out) : toLayersModel(spec, values);
  try {
    const dir = join(out, `tfjs-${dtype}`);
    return { dir, bytes: await saveQuantizedTfjs(model, dir, dtype) };
  } finally {
    model.dispose();
  }
}
