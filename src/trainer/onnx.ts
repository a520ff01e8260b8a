/**
 * A job's `onnx: true`: the model rank 0 wrote also written as model.onnx beside it (int8 QDQ when quantized),
 * checked in onnxruntime-node, with its size and its batch-1 latency there for the summary and the stage table.
 */
import type { ModelSpec } from '../config/schema.ts';
import { gatherBatch, type LabeledSet } from '../data/labeled-set.ts';
import type { SavedQuantization } from '../models/net-dir.ts';
import { writeModelOnnx } from '../models/onnx/export.ts';
import { OnnxExportError } from '../models/onnx/from-layers.ts';
import { loadOnnxRuntime, onnxLatencyMs } from '../models/onnx/runtime.ts';

/** Test samples the latency is measured on, in turn. */
const LATENCY_SAMPLES = 64;

export interface OnnxFigures {
  /** Bytes of model.onnx. */
  onnx_bytes: number;
  /** Median batch-1 inference time in onnxruntime-node, ms; absent where onnxruntime-node is not installed. */
  onnx_latency_ms?: number;
}

export async function writeJobOnnx(
  dir: string,
  spec: ModelSpec,
  values: readonly Float32Array[],
  quantization: SavedQuantization | undefined,
  test: LabeledSet,
  sampleShape: readonly number[],
): Promise<{ figures?: OnnxFigures; line: string }> {
  let written: Awaited<ReturnType<typeof writeModelOnnx>>;
  try {
    written = await writeModelOnnx(dir, spec, values, quantization);
  } catch (err) {
    // A layer without an ONNX form: the model is written all the same, and the line says why there is no file.
    if (err instanceof OnnxExportError) return { line: `model.onnx not written: ${err.message}` };
    throw err;
  }
  const { runtime } = await loadOnnxRuntime();
  const kind = quantization ? `int${quantization.weights.bits} QDQ` : 'fp32';
  if (!runtime || 'skipped' in written.check) {
    return {
      figures: { onnx_bytes: written.bytes },
      line: `${written.path} (${kind}, ${written.bytes} bytes) not run: onnxruntime-node is not installed`,
    };
  }
  const all = Int32Array.from({ length: Math.min(LATENCY_SAMPLES, test.length) }, (_, i) => i);
  const { inputs } = gatherBatch(test, all, 0, all.length);
  const latency = await onnxLatencyMs(runtime, written.data, inputs, sampleShape);
  return {
    figures: { onnx_bytes: written.bytes, onnx_latency_ms: latency },
    line: `${written.path} (${kind}, ${written.bytes} bytes): max |onnx − kd-launch| ${written.check.maxAbsDiff.toExponential(1)} on ${written.check.inputs} inputs, ${latency.toFixed(3)} ms per sample at batch 1`,
  };
}
