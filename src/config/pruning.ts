/**
 * The job file's `pruning:` section: unstructured magnitude pruning with tfmot's schedules (`ConstantSparsity`,
 * `PolynomialDecay`), same keys and defaults where tfmot has them. Every weight matrix and convolution kernel of
 * the model is pruned to the schedule's sparsity, each on its own; biases, normalisation parameters and the
 * objective's own parameters are not.
 */
import { z } from 'zod';

const sparsity = z
  .number()
  .min(0, 'a sparsity is a fraction in [0, 1): the share of weights set to zero')
  .lt(1, 'a sparsity is a fraction in [0, 1): 1 would leave no weight');
const step = z.number().int().min(0);

export const PruningSpec = z
  .strictObject({
    structure: z
      .enum(['weights', 'units', 'heads'])
      .default('weights')
      .describe(
        "`weights`: single weights by magnitude (tfmot's); `units`: whole units by the L2 norm of their incoming weights, the hidden units of an MLP's or a CNN's dense layers and the channels (filters) of a CNN's convs, removed from the model it writes (a smaller MLP or CNN); `heads`: whole attention heads of a Transformer's layers by the L2 norm of their weights (one kept in each layer), removed from the model it writes (its `layer_heads`)",
      ),
    schedule: z
      .enum(['polynomial', 'constant'])
      .default('polynomial')
      .describe(
        "`polynomial` (tfmot's PolynomialDecay): from `initial_sparsity` at `begin_step` to `sparsity` at `end_step`, as 1 − (1 − t)^power; `constant` (ConstantSparsity): `sparsity` from `begin_step` on",
      ),
    sparsity: sparsity.describe('the final (or constant) share of each pruned tensor set to zero, in [0, 1)'),
    initial_sparsity: sparsity.default(0).describe('`polynomial`: the sparsity at `begin_step`'),
    begin_step: step.default(0).describe('the first step whose update is followed by pruning'),
    end_step: step
      .optional()
      .describe("`polynomial`: the step the final sparsity is reached at; default the run's last step"),
    frequency: z
      .number()
      .int()
      .positive()
      .default(100)
      .describe('the masks are recomputed every this many steps (tfmot: `frequency`)'),
    power: z.number().positive().default(3).describe('`polynomial`: the exponent of the decay'),
  })
  .superRefine((p, ctx) => {
    if (p.schedule === 'polynomial' && p.initial_sparsity > p.sparsity)
      ctx.addIssue({
        code: 'custom',
        path: ['initial_sparsity'],
        message: `initial_sparsity ${p.initial_sparsity} is above sparsity ${p.sparsity}: pruning only removes weights`,
      });
    if (p.end_step !== undefined && p.end_step <= p.begin_step)
      ctx.addIssue({
        code: 'custom',
        path: ['end_step'],
        message: `end_step ${p.end_step} is not after begin_step ${p.begin_step}`,
      });
  })
  .describe(
    "Magnitude pruning while training (tfmot's `prune_low_magnitude`): after the optimizer update of each `frequency`-th step between `begin_step` and `end_step`, the weights of smallest magnitude in each weight matrix and kernel are set to zero, and stay zero: their gradients and updates are masked, under data parallelism and every ZeRO stage (the masks are sharded like the parameters), with any objective (prune while distilling).",
  );
export type PruningSpec = z.infer<typeof PruningSpec>;
