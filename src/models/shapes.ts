/**
 * A zoo model's input and output shapes from its spec alone (no tfjs, no weights), for checking a job against
 * its dataset before any worker starts.
 */
import type { ModelSpec } from '../config/schema.ts';
import { activationShape } from '../pipeline/stage-net.ts';
import { moduleNet } from './model-module.ts';
import { readTfjsModel } from './tfjs-dir.ts';

export type CnnSpec = Extract<ModelSpec, { type: 'cnn' }>;

/** [height, width, channels] of one sample. */
type Hwc = [number, number, number];

/** [height, width, channels] of one sample after each conv block's convolution, and after its max-pool. */
export function cnnLayerShapes(spec: CnnSpec): { conv: Hwc; pooled: Hwc }[] {
  let [h, w] = spec.input;
  return spec.conv.map((block) => {
    const shrink = block.padding === 'valid' ? block.kernel - 1 : 0;
    h = Math.ceil((h - shrink) / block.stride);
    w = Math.ceil((w - shrink) / block.stride);
    const conv: Hwc = [Math.max(h, 0), Math.max(w, 0), block.filters];
    const pool = block.pool ?? spec.pool;
    if (pool > 1) {
      h = Math.floor(h / pool);
      w = Math.floor(w / pool);
    }
    return { conv, pooled: [Math.max(h, 0), Math.max(w, 0), block.filters] };
  });
}

/** [height, width, channels] of one sample after each conv block of a CNN (its max-pool included). */
export function cnnBlockShapes(spec: CnnSpec): Hwc[] {
  return cnnLayerShapes(spec).map((s) => s.pooled);
}

/**
 * The shape of one input sample, without the batch dimension: [features] for an MLP, [h, w, c] for a CNN,
 * [seq_len] token ids for a Transformer.
 */
export function modelInputShape(spec: ModelSpec): number[] {
  switch (spec.type) {
    case 'mlp':
      return [spec.layers[0]];
    case 'cnn':
      return [...spec.input];
    case 'transformer':
      return [spec.seq_len];
    case 'tfjs':
      return [...readTfjsModel(spec.path).net.inputShape];
    case 'module':
      return [...moduleNet(spec).inputShape];
  }
}

/** How many outputs (logits) the model has. */
export function modelOutputSize(spec: ModelSpec): number {
  switch (spec.type) {
    case 'mlp':
      return spec.layers[spec.layers.length - 1];
    case 'cnn':
    case 'transformer':
      return spec.classes;
    case 'tfjs':
    case 'module': {
      // The Net states shapes only through its forward: one zero sample through every layer.
      const net = spec.type === 'tfjs' ? readTfjsModel(spec.path).net : moduleNet(spec);
      const shape = activationShape(net, net.blocks.length);
      return shape.reduce((a, b) => a * b, 1);
    }
  }
}
