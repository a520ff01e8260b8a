/**
 * A model without the units that units pruning removed (src/engine/pruning.ts): an MLP's hidden units, a CNN's conv
 * channels and hidden dense units whose incoming weights and bias are all zero. It computes what the masked model
 * computes: a removed unit outputs activation(0) = 0 (relu, tanh and gelu; max-pooling zeros gives zero) and what
 * it fed is zero too. Returns the smaller spec and its values, in `buildNet`'s order.
 */
import type { ModelSpec } from '../config/schema.ts';
import type { TransformerSpec } from '../config/transformer.ts';
import type { CnnSpec } from './shapes.ts';
import { transformerNet } from './transformer.ts';

type MlpSpec = Extract<ModelSpec, { type: 'mlp' }>;

export function withoutPrunedUnits<S extends MlpSpec | CnnSpec>(
  spec: S,
  values: readonly Float32Array[],
): { spec: S; values: Float32Array[] };
export function withoutPrunedUnits(
  spec: MlpSpec | CnnSpec,
  values: readonly Float32Array[],
): { spec: MlpSpec | CnnSpec; values: Float32Array[] } {
  if (spec.type === 'mlp') {
    if (spec.ranks) throw new Error('units pruning removes units of a whole MLP; this one is low-rank');
    const kept = keptUnits(spec.layers[0], values);
    return { spec: { ...spec, layers: [spec.layers[0], ...kept.units] }, values: kept.values };
  }
  const kept = keptUnits(spec.input[2], values);
  const convs = spec.conv.length;
  return {
    spec: {
      ...spec,
      conv: spec.conv.map((block, i) => ({ ...block, filters: kept.units[i] })),
      dense: kept.units.slice(convs, -1),
    },
    values: kept.values,
  };
}

/**
 * The chain of layers in `values` ([kernel, bias] per layer, each kernel's units on its last axis) without the
 * units of hidden layers that are dead (bias and every incoming weight from a kept input zero); the last layer
 * keeps all of its units, and a layer keeps at least one. Each kernel is seen as [outer, inputs, units]: the
 * input units of a dense layer, the channels of a conv (outer: its window) or of a dense after one (outer: the
 * pixels, in Flatten's NHWC order).
 */
function keptUnits(
  inputs: number,
  values: readonly Float32Array[],
): { units: number[]; values: Float32Array[] } {
  let keptIn = Array.from({ length: inputs }, (_, i) => i);
  let width = inputs;
  const out: Float32Array[] = [];
  const units: number[] = [];
  const layers = values.length / 2;
  for (let l = 0; l < layers; l++) {
    const [kernel, bias] = [values[2 * l], values[2 * l + 1]];
    const n = bias.length;
    const outer = kernel.length / (width * n);
    const at = (o: number, i: number, u: number) => (o * width + i) * n + u;
    const alive = (u: number) => {
      if (bias[u] !== 0) return true;
      for (let o = 0; o < outer; o++) for (const i of keptIn) if (kernel[at(o, i, u)] !== 0) return true;
      return false;
    };
    let keptOut = Array.from({ length: n }, (_, u) => u).filter((u) => l === layers - 1 || alive(u));
    if (keptOut.length === 0) keptOut = [0];
    const k = new Float32Array(outer * keptIn.length * keptOut.length);
    let w = 0;
    for (let o = 0; o < outer; o++)
      for (const i of keptIn) for (const u of keptOut) k[w++] = kernel[at(o, i, u)];
    out.push(
      k,
      Float32Array.from(keptOut, (u) => bias[u]),
    );
    units.push(keptOut.length);
    keptIn = keptOut;
    width = n;
  }
  return { units, values: out };
}

/**
 * A Transformer without the attention heads heads pruning removed (every weight of the head zero): each layer keeps
 * its live heads (one at least), sliced out of its head-major parameters, and the spec says how many in
 * `layer_heads`. A removed head added nothing to its layer's output, so the smaller model computes the same.
 */
export function withoutPrunedHeads(
  spec: TransformerSpec,
  values: readonly Float32Array[],
): { spec: TransformerSpec; values: Float32Array[] } {
  const net = transformerNet(spec);
  const out: Float32Array[] = [];
  const kept: number[] = [];
  let at = 0;
  for (const block of net.blocks) {
    const own = values.slice(at, at + block.params.length);
    at += block.params.length;
    const headed = block.params.flatMap((p, k) => (p.headMajor ? [k] : []));
    if (headed.length === 0) {
      out.push(...own);
      continue;
    }
    const heads = block.params[headed[0]].shape[0];
    const slice = (k: number, h: number) => {
      const size = own[k].length / heads;
      return own[k].subarray(h * size, (h + 1) * size);
    };
    let live = Array.from({ length: heads }, (_, h) => h).filter((h) =>
      headed.some((k) => slice(k, h).some((v) => v !== 0)),
    );
    if (live.length === 0) live = [0];
    kept.push(live.length);
    own.forEach((v, k) => {
      out.push(headed.includes(k) ? concat(live.map((h) => slice(k, h))) : v);
    });
  }
  return { spec: { ...spec, layer_heads: kept }, values: out };
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
