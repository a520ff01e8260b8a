/**
 * Layer reduction (DeepSpeed's `layer_reduction.teacher_layer`, TextBrewer's practice of initialising a shallow
 * student from a deep teacher): `model: {stage: teacher, layers: [1, 3]}` starts a stage from the chosen layers of
 * an earlier stage's model. A Transformer keeps its embeddings, the chosen encoder layers in order, and its head;
 * an MLP its chosen hidden layers and its output layer, where their sizes chain. Pure arithmetic on specs, so the
 * launcher checks a job with it before any worker starts, and the run maps the trained values with it.
 */
import type { ModelSpec } from './schema.ts';

/** The model `spec` becomes with only `layers` kept, or why it cannot. */
export type Reduction = { readonly spec: ModelSpec } | { readonly issue: string };

/** What a model calls the layers `layers:` counts, and how many it has. */
function reducible(spec: ModelSpec): { what: string; count: number } | undefined {
  if (spec.type === 'transformer') return { what: 'encoder layer', count: spec.layers };
  if (spec.type === 'mlp') return { what: 'hidden layer', count: spec.layers.length - 2 };
  return undefined;
}

export function reducedSpec(spec: ModelSpec, layers: readonly number[]): Reduction {
  const kind = reducible(spec);
  if (!kind) {
    return { issue: `layer reduction keeps layers of a transformer or an mlp, not of a ${spec.type}` };
  }
  const { what, count } = kind;
  const outside = layers.find((l) => l >= count);
  if (outside !== undefined) {
    return {
      issue: `${what} ${outside} does not exist: the ${spec.type} has ${count} (${count === 0 ? 'none' : `0 … ${count - 1}`})`,
    };
  }
  if (layers.some((l, i) => i > 0 && l <= layers[i - 1])) {
    return { issue: `layers [${layers.join(', ')}] must be in increasing order, each once` };
  }
  if (layers.length === count) return { issue: `layers keeps all ${count} ${what}s: nothing is reduced` };
  if (spec.type === 'transformer') {
    const heads = spec.layer_heads;
    return {
      spec: {
        ...spec,
        layers: layers.length,
        ...(heads ? { layer_heads: layers.map((l) => heads[l]) } : {}),
      },
    };
  }
  if (spec.type !== 'mlp') throw new Error('unreachable: reducible() admits transformer and mlp');
  return mlpReduction(spec, layers);
}

/**
 * An MLP's hidden layer l maps sizes[l] to sizes[l + 1]; kept layers chain where each one's input size is the size
 * the kept layer before it (or the input) gives, and the output layer's input is the last kept one's size.
 */
function mlpReduction(spec: Extract<ModelSpec, { type: 'mlp' }>, layers: readonly number[]): Reduction {
  const sizes = spec.layers;
  const head = sizes.length - 2;
  const path = [...layers, head];
  let width = sizes[0];
  for (const l of path) {
    if (sizes[l] !== width) {
      const name = l === head ? 'the output layer' : `hidden layer ${l}`;
      return {
        issue: `${name} takes ${sizes[l]} inputs where the layers kept before it give ${width}: an MLP ${sizes.join('-')} keeps only layers whose sizes chain`,
      };
    }
    width = sizes[l + 1];
  }
  const ranks = spec.ranks;
  return {
    spec: {
      ...spec,
      layers: [sizes[0], ...path.map((l) => sizes[l + 1])],
      ...(ranks ? { ranks: path.map((l) => ranks[l]) } : {}),
    },
  };
}

/**
 * The indices of the Net blocks of `spec`'s model that a reduction to `layers` keeps, in order: a Transformer's
 * blocks are the embeddings, one per encoder layer, and the head; an MLP's one per dense layer.
 */
export function keptBlocks(spec: ModelSpec, layers: readonly number[]): number[] {
  if (spec.type === 'transformer') return [0, ...layers.map((l) => l + 1), spec.layers + 1];
  if (spec.type === 'mlp') return [...layers, spec.layers.length - 2];
  throw new Error(`layer reduction keeps layers of a transformer or an mlp, not of a ${spec.type}`);
}
