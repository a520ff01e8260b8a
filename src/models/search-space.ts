/**
 * The candidates of a student search (src/config/search.ts): shapes of the stage's model drawn from `space`, each
 * key's value uniformly (an MLP's width for each hidden layer on its own), distinct, within `max_parameters`, in the
 * order drawn. Drawn from the job seed alone, so every rank holds the same list.
 */
import { deriveSeed, Rng } from '../base/rng.ts';
import type { ModelSpec } from '../config/schema.ts';
import { type SearchSpace, type SearchSpec, SPACE_KEYS } from '../config/search.ts';
import { countParams } from '../engine/net.ts';
import { buildNet } from './build.ts';

/** Purpose tag of the search's draws (see `deriveSeed`). */
const SEARCH_STREAM = 0x5ea4;

/** Draws per trial asked for before a search stops looking for distinct candidates within the budget. */
const DRAWS_PER_TRIAL = 64;

export interface Candidate {
  readonly spec: ModelSpec;
  /** A short name: an MLP's sizes `784-128-10`, a Transformer's `layers 2, dim 64, ffn 128`. */
  readonly name: string;
  readonly parameters: number;
}

export type SearchableSpec = Extract<ModelSpec, { type: keyof typeof SPACE_KEYS }>;

export function isSearchable(spec: ModelSpec): spec is SearchableSpec {
  return spec.type in SPACE_KEYS;
}

export function candidateName(spec: SearchableSpec): string {
  return spec.type === 'mlp'
    ? spec.layers.join('-')
    : `layers ${spec.layers}, dim ${spec.dim}, ffn ${spec.ffn}`;
}

function candidate(spec: SearchableSpec): Candidate {
  return { spec, name: candidateName(spec), parameters: countParams(buildNet(spec)) };
}

/** One shape drawn from `space` around `base`; a key left out keeps the base's value. */
function draw(base: SearchableSpec, space: SearchSpace, rng: Rng): SearchableSpec {
  const pick = (values: readonly number[] | undefined, own: number) =>
    values ? values[rng.nextInt(values.length)] : own;
  if (base.type === 'mlp') {
    const sizes = base.layers;
    const depth = pick(space.hidden_layers, sizes.length - 2);
    // The config checks that an MLP's space gives `units`.
    const hidden = Array.from({ length: depth }, (_, i) => pick(space.units, sizes[i + 1]));
    // A drawn MLP is whole: ranks belong to the model low_rank wrote.
    const { ranks: _, ...whole } = base;
    return { ...whole, layers: [sizes[0], ...hidden, sizes[sizes.length - 1]] };
  }
  // A drawn Transformer is whole: layer_heads belong to the model heads pruning wrote.
  const { layer_heads: _, ...whole } = base;
  return {
    ...whole,
    layers: pick(space.layers, base.layers),
    dim: pick(space.dim, base.dim),
    ffn: pick(space.ffn, base.ffn),
  };
}

/** The smallest shape of the space: every size at its least (parameters grow with each of them). */
export function smallestCandidate(base: SearchableSpec, space: SearchSpace): Candidate {
  const least = (values: readonly number[] | undefined, own: number) => (values ? Math.min(...values) : own);
  if (base.type === 'mlp') {
    const sizes = base.layers;
    const depth = least(space.hidden_layers, sizes.length - 2);
    const width = least(space.units, sizes[1]);
    const { ranks: _, ...whole } = base;
    return candidate({
      ...whole,
      layers: [sizes[0], ...Array<number>(depth).fill(width), sizes[sizes.length - 1]],
    });
  }
  const dims = (space.dim ?? [base.dim]).filter((d) => d % base.heads === 0);
  const { layer_heads: _, ...whole } = base;
  return candidate({
    ...whole,
    layers: least(space.layers, base.layers),
    dim: dims.length > 0 ? Math.min(...dims) : base.dim,
    ffn: least(space.ffn, base.ffn),
  });
}

/** Up to `search.trials` distinct candidates within the budget, drawn from `seed`. */
export function searchCandidates(base: SearchableSpec, search: SearchSpec, seed: number): Candidate[] {
  const rng = new Rng(deriveSeed(seed, SEARCH_STREAM));
  const found = new Map<string, Candidate>();
  for (let i = 0; i < search.trials * DRAWS_PER_TRIAL && found.size < search.trials; i++) {
    const spec = draw(base, search.space, rng);
    if (spec.type === 'transformer' && spec.dim % spec.heads !== 0) continue;
    const name = candidateName(spec);
    if (found.has(name)) continue;
    const c = candidate(spec);
    if (c.parameters <= search.max_parameters) found.set(name, c);
  }
  return [...found.values()];
}
