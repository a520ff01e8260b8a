/**
 * The job file's `low_rank:` section: each dense layer of a trained MLP replaced by two of rank r from its SVD
 * (the best rank-r approximation), then fine-tuned. `rank` gives r; `energy` the share of ∑σ² each layer keeps,
 * which picks each layer's own r. A layer is factorised only where r · (inputs + units) < inputs · units, where
 * the two layers are smaller than the one.
 */
import { z } from 'zod';

export const LowRankSpec = z
  .strictObject({
    rank: z.number().int().positive().optional().describe('the rank of every factorised layer'),
    energy: z
      .number()
      .gt(0, 'energy is a share of the singular values’ squares in (0, 1]')
      .max(1, 'energy is a share of the singular values’ squares in (0, 1]')
      .optional()
      .describe('each layer takes the smallest rank that keeps this share of ∑σ²'),
  })
  .superRefine((s, ctx) => {
    if ((s.rank === undefined) === (s.energy === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: "give 'rank' or 'energy', one of them" });
    }
  })
  .describe(
    "Low-rank factorisation of a trained MLP: each dense layer W (inputs × units) becomes two, A (inputs × r) and B (r × units), from its SVD (A·B is W's best rank-r approximation), where that makes it smaller; then the run fine-tunes them. It starts from a trained model: `model: {stage: NAME}` or `{path: DIR}`.",
  );
export type LowRankSpec = z.infer<typeof LowRankSpec>;
