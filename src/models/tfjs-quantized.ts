/**
 * tfjs' own quantized weight format, as `tensorflowjs_converter --quantize_uint8` (or `_uint16`) writes it: each
 * float32 weight stored as uint8 (or uint16) with a `scale` and a `min` in its manifest entry, which
 * `tf.loadLayersModel` turns back into floats as u · scale + min. A quarter (half) of the bytes; the model computes
 * with the dequantized weights. The range of each tensor is widened to hold 0 and nudged so that 0 is exact: a
 * pruned weight stays exactly zero.
 */
import { tf } from '../backend/tf.ts';
import { writeDirAtomically } from '../base/durable-file.ts';
import { roundHalfEven } from '../engine/quantization.ts';
import { MODEL_JSON, WEIGHTS_BIN } from './save.ts';

export type TfjsWeightDtype = 'uint8' | 'uint16';

/** One tensor in tfjs' quantized form: the integers, and the scale and min that give the floats back. */
export function quantizeTfjsWeight(
  values: Float32Array,
  dtype: TfjsWeightDtype,
): { ints: Uint8Array | Uint16Array; scale: number; min: number } {
  const levels = dtype === 'uint8' ? 255 : 65535;
  let lo = 0;
  let hi = 0;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const scale = hi > lo ? Math.fround((hi - lo) / levels) : 1;
  const zero = roundHalfEven(-lo / scale);
  const ints = dtype === 'uint8' ? new Uint8Array(values.length) : new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    ints[i] = Math.max(0, Math.min(levels, roundHalfEven(values[i] / scale) + zero));
  }
  // Not rounded to float32: tfjs computes u · scale + min in doubles, where 0 then comes back exactly.
  return { ints, scale, min: -zero * scale };
}

/** Writes `model` to `dir` as a tfjs layers-model directory with its float32 weights quantized to `dtype`. */
export async function saveQuantizedTfjs(
  model: tf.LayersModel,
  dir: string,
  dtype: TfjsWeightDtype,
): Promise<number> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!artifacts?.modelTopology || artifacts.modelTopology instanceof ArrayBuffer || !artifacts.weightData) {
    throw new Error('the layers model produced no JSON topology or no weights');
  }
  const data = tf.io.CompositeArrayBuffer.join(artifacts.weightData);
  const parts: Uint8Array[] = [];
  let offset = 0;
  const weights = (artifacts.weightSpecs ?? []).map((spec) => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.dtype !== 'float32')
      throw new Error(`weight ${spec.name} is ${spec.dtype}: only float32 is quantized`);
    const values = new Float32Array(data.slice(offset, offset + n * 4));
    offset += n * 4;
    const { ints, scale, min } = quantizeTfjsWeight(values, dtype);
    parts.push(new Uint8Array(ints.buffer));
    return { ...spec, quantization: { dtype, scale, min } };
  });
  const bytes = Buffer.concat(parts);
  const json: tf.io.ModelJSON = {
    modelTopology: artifacts.modelTopology,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: null,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights }],
  };
  const text = JSON.stringify(json);
  writeDirAtomically(dir, [
    [WEIGHTS_BIN, bytes],
    [MODEL_JSON, text],
  ]);
  return bytes.byteLength + Buffer.byteLength(text);
}
