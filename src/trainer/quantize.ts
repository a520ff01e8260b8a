/**
 * A quantized run (the job's `quantization:` section): the model's forward fake-quantized, and before the first
 * step the activation ranges calibrated on training batches. Calibration runs before a checkpoint is resumed, on
 * the initial values and epoch 0's first micro-batches, so a resumed run fixes the same ranges as the run it
 * continues.
 */
import { tf } from '../backend/tf.ts';
import type { QuantizationSpec } from '../config/quantization.ts';
import { gatherBatch } from '../data/labeled-set.ts';
import type { Net } from '../engine/net.ts';
import {
  ActivationQuantizers,
  fakeQuantizedNet,
  quantizedBlocks,
  type WeightQuantization,
} from '../engine/quantization.ts';
import type { Setup } from './train.ts';

/** A run's quantization: the fake-quantized net it trains and the quantizers the calibration fixes. */
export interface Quantized {
  readonly net: Net;
  readonly weights: WeightQuantization;
  readonly activations: ActivationQuantizers;
}

export function quantized(net: Net, spec: QuantizationSpec): Quantized {
  const weights: WeightQuantization = { bits: spec.bits, perChannel: spec.granularity === 'per_channel' };
  const { method, percentile } = spec.calibration;
  const activations = new ActivationQuantizers(
    quantizedBlocks(net),
    method === 'minmax' ? { kind: 'minmax' } : { kind: 'percentile', percentile },
  );
  return { net: fakeQuantizedNet(net, weights, activations), weights, activations };
}

/**
 * Measures the activation ranges over `batches` micro-batches of this rank's epoch-0 samples (inference mode),
 * combines them over the data-parallel ranks (the widest range for min/max, the mean for percentiles), and fixes
 * the quantizers. Collective.
 */
export async function calibrate(s: Setup, q: Quantized, spec: QuantizationSpec): Promise<void> {
  const { engine, sampler, train, run, placement, ctx } = s;
  const micro = run.batch.microBatch;
  sampler.setEpoch(0);
  const indices = sampler.indices();
  const batches = Math.min(spec.calibration.batches, Math.floor(indices.length / micro));
  q.activations.observe(true);
  try {
    await engine.withParams((params) => {
      for (let b = 0; b < batches; b++) {
        const { inputs } = gatherBatch(train, indices, b * micro, micro);
        tf.tidy(() => {
          const x = tf.tensor(inputs, [micro, ...placement.model.inputShape], placement.model.inputDtype);
          engine.forward(params, x);
        });
      }
    });
  } finally {
    q.activations.observe(false);
  }
  const ranges = q.activations.ranges();
  if (spec.calibration.method === 'minmax') {
    // One all-reduce of max over [−lo, hi] pairs: the lowest lo and the highest hi.
    const flip = (r: Float32Array) => {
      for (let i = 0; i < r.length; i += 2) r[i] = -r[i];
    };
    flip(ranges);
    await ctx.pg.allReduce(ranges, { op: 'max', dtype: 'fp32' });
    flip(ranges);
  } else {
    await ctx.pg.allReduce(ranges, { op: 'avg', dtype: 'fp32' });
  }
  q.activations.fix(ranges);
}

/** The log line of a calibrated run, e.g. `int8 per_channel weights, 8-bit activations of 3 layers from 8 batches (minmax)`. */
export function quantizationLine(q: Quantized, spec: QuantizationSpec): string {
  const layers = (q.activations.fixed ?? []).filter(Boolean).length;
  const { batches, method } = spec.calibration;
  const what = `int${spec.bits} ${spec.granularity} weights, 8-bit activations of ${layers} layers calibrated on ${batches} batches (${method})`;
  return `${spec.mode === 'ptq' ? 'post-training quantization' : 'quantization-aware training'}: ${what}`;
}
