/**
 * The job file's `search:` section: a stage that searches for its student's shape. It samples shapes from `space`
 * (around the stage's model) under `max_parameters`, trains each candidate briefly on the stage's objective, and
 * keeps the best by successive halving: every rung keeps the best 1/eta of the trials and gives them eta times the
 * steps, until one is left. Trials are scored on `validation_fraction` of the training set, held out from them, so
 * the test set judges only the winner, which the stage then trains in full and writes as its model (a later stage
 * takes it with `model: {stage: NAME}` or as a teacher).
 */
import { z } from 'zod';
import type { JobBase } from './schema.ts';

const sizes = (what: string) =>
  z
    .array(z.number().int().positive())
    .min(1, `list at least one ${what}`)
    .refine((s) => new Set(s).size === s.length, `${what} values must differ`)
    .optional();

export const SearchSpace = z
  .strictObject({
    hidden_layers: sizes('number of hidden layers').describe("an MLP's candidate numbers of hidden layers"),
    units: sizes('width').describe("an MLP's candidate widths, drawn for each hidden layer"),
    layers: sizes('number of encoder layers').describe("a Transformer's candidate numbers of encoder layers"),
    dim: sizes('hidden size').describe("a Transformer's candidate hidden sizes (multiples of its heads)"),
    ffn: sizes('feed-forward size').describe("a Transformer's candidate feed-forward sizes"),
  })
  .describe(
    "What varies, around the stage's model: an MLP's `hidden_layers` and `units`, a Transformer's `layers`, `dim` and `ffn`. A key left out keeps the model's own value.",
  );
export type SearchSpace = z.infer<typeof SearchSpace>;

/** The keys of `space` each model kind varies. */
export const SPACE_KEYS = {
  mlp: ['hidden_layers', 'units'],
  transformer: ['layers', 'dim', 'ffn'],
} as const satisfies Record<string, readonly (keyof SearchSpace)[]>;

export const SearchSpec = z
  .strictObject({
    space: SearchSpace,
    max_parameters: z
      .number()
      .int()
      .positive()
      .describe('the budget: a candidate has at most this many parameters'),
    trials: z
      .number()
      .int()
      .min(2, 'a search needs at least 2 trials')
      .max(64, 'a search runs at most 64 trials')
      .default(8)
      .describe('candidates sampled (fewer when the space under the budget has fewer)'),
    min_steps: z
      .number()
      .int()
      .positive()
      .default(100)
      .describe("steps of a trial in the first rung; each rung's are eta times the last's"),
    eta: z
      .number()
      .int()
      .min(2, 'eta is at least 2')
      .default(2)
      .describe('each rung keeps the best 1/eta of the trials'),
    validation_fraction: z
      .number()
      .gt(0, 'validation_fraction is in (0, 1)')
      .lt(1, 'validation_fraction is in (0, 1)')
      .default(0.1)
      .describe('share of the training set held out from the trials to score them'),
  })
  .meta({
    description:
      "A student search (a stage's): samples shapes of the stage's model under a parameter budget, trains each briefly on the stage's objective, keeps the best by successive halving (scored on a share of the training set held out from the trials), prints the trials table, and trains the winner as the stage's model.",
    examples: [
      `search:
  space: {hidden_layers: [1, 2], units: [32, 64, 128, 256]}
  max_parameters: 100000
  trials: 8
  min_steps: 100
  eta: 2`,
    ],
  });
export type SearchSpec = z.infer<typeof SearchSpec>;

type Issue = { path: (string | number)[]; message: string };

/**
 * What a stage's search needs beyond its shape: a fresh MLP or Transformer to vary, a space of that model's keys,
 * and nothing that changes a trained model's weights (compress the winner in a later stage).
 */
export function searchIssues(
  job: JobBase,
  at: (key: string) => (string | number)[],
  where: string,
  trained: boolean,
): Issue[] {
  const search = job.search;
  const model = job.model;
  if (!search || !model) return [];
  if (trained) {
    return [
      {
        path: at('search'),
        message: `${where}searches fresh students: give it a model spec, not a trained model`,
      },
    ];
  }
  if (model.type !== 'mlp' && model.type !== 'transformer') {
    return [{ path: at('search'), message: `${where}searches an mlp or a transformer, not a ${model.type}` }];
  }
  const issues: Issue[] = [];
  const keys = SPACE_KEYS[model.type] as readonly string[];
  const given = Object.keys(search.space).filter((k) => search.space[k as keyof SearchSpace] !== undefined);
  for (const key of given.filter((k) => !keys.includes(k))) {
    issues.push({
      path: [...at('search'), 'space', key],
      message: `${where}searches ${model.type === 'mlp' ? 'an mlp' : 'a transformer'}, whose space has ${keys.join(', ')}; ${key} is another model's`,
    });
  }
  if (model.type === 'mlp' && search.space.units === undefined) {
    issues.push({
      path: [...at('search'), 'space'],
      message: `${where}searches an mlp, whose space needs units`,
    });
  }
  if (model.type === 'transformer') {
    if (!given.some((k) => keys.includes(k))) {
      issues.push({
        path: [...at('search'), 'space'],
        message: `${where}searches a transformer: give its space layers, dim or ffn`,
      });
    }
    const odd = (search.space.dim ?? []).filter((d) => d % model.heads !== 0);
    if (odd.length > 0) {
      issues.push({
        path: [...at('search'), 'space', 'dim'],
        message: `${where}searches dim ${odd.join(', ')}, not a multiple of the model's ${model.heads} heads`,
      });
    }
  }
  if ((job.distillation?.intermediate_matches ?? []).length > 0) {
    issues.push({
      path: [...at('distillation'), 'intermediate_matches'],
      message: `${where}searches candidates of different shapes, which match no teacher layers: distil logits alone`,
    });
  }
  for (const other of ['pipeline', 'pruning', 'quantization', 'clustering', 'low_rank'] as const) {
    if (job[other]) {
      issues.push({
        path: at(other),
        message: `${where}searches plain students: ${other} goes in a later stage, on the winner`,
      });
    }
  }
  return issues;
}
