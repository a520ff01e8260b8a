/**
 * The job file's `quantization:` section: integer weights and activations, simulated in float (fake quantization)
 * while the run trains and evaluates, and stored as integers in the model it writes.
 *
 *   mode: ptq   post-training: calibrate the activation ranges on a few training batches, quantize, evaluate;
 *               nothing is trained (`steps` and `epochs` are not used)
 *   mode: qat   quantization-aware training: calibrate, then train with the weights and activations fake-quantized
 *               in the forward and a straight-through gradient (tfmot's `quantize_model`)
 *
 * Weights: symmetric, `bits` 8 or 4, one scale per output channel (`per_channel`) or per tensor. Activations (the
 * input of every block with a weight matrix or kernel): 8-bit affine, per tensor, from the calibrated range.
 */
import { z } from 'zod';

export const QuantizationSpec = z
  .strictObject({
    mode: z
      .enum(['ptq', 'qat'])
      .describe(
        '`ptq`: post-training quantization of a trained model (nothing is trained); `qat`: quantization-aware training, fake quantization in the forward with a straight-through gradient',
      ),
    bits: z
      .union([z.literal(8), z.literal(4)], { error: 'bits is 8 or 4' })
      .default(8)
      .describe('bits of each weight, symmetric: 8 (−127…127) or 4 (−7…7)'),
    granularity: z
      .enum(['per_channel', 'per_tensor'])
      .default('per_channel')
      .describe("the weights' scales: one per output channel (the last axis) or one per tensor"),
    calibration: z
      .strictObject({
        batches: z
          .number()
          .int()
          .positive()
          .default(8)
          .describe('training micro-batches per rank whose activations set the ranges (each rank its own)'),
        method: z
          .enum(['minmax', 'percentile'])
          .default('minmax')
          .describe(
            "`minmax`: the smallest and largest value seen; `percentile`: the mean over the batches of each batch's `percentile` and 100 − `percentile` (outliers clipped)",
          ),
        percentile: z
          .number()
          .gt(50)
          .max(100)
          .default(99.99)
          .describe('`percentile`: the upper percentile of each range, in (50, 100]'),
      })
      .default({ batches: 8, method: 'minmax', percentile: 99.99 })
      .describe('How the 8-bit activation ranges are measured before quantizing.'),
  })
  .describe(
    "Integer quantization of a trained model (tfmot's post-training quantization and `quantize_model`): the weights of every weight matrix and kernel symmetric to `bits`, the input of each such layer 8-bit affine from ranges calibrated on training batches. The run evaluates the quantized model (simulated in float, as deployed) and writes its weights as integers with their scales. It starts from a trained model: `model: {stage: NAME}` or `{path: DIR}`.",
  );
export type QuantizationSpec = z.infer<typeof QuantizationSpec>;
