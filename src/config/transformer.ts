import { z } from 'zod';
import { MAX_MODEL_LAYERS } from './limits.ts';

const positiveInt = z.number().int().positive();

/**
 * The job file's `model: {type: transformer}` (built by src/models/transformer.ts). Defined here, with the
 * other model specs, because the config layer validates jobs without importing the models.
 *
 * A Transformer encoder classifier over int32 token ids (BERT's shape, post-LN):
 *
 *   model:
 *     type: transformer
 *     vocab: 20         # token ids 0 … vocab − 1
 *     seq_len: 16       # tokens per sample (learned position embeddings, one per position)
 *     dim: 64           # hidden size; a multiple of heads
 *     heads: 4
 *     layers: 4         # encoder blocks
 *     ffn: 128          # feed-forward inner size
 *     classes: 8        # linear outputs (logits)
 *     dropout: 0.1      # embeddings, attention probabilities, attention and feed-forward outputs
 *     pool: mean        # the head's summary of the sequence: mean of the positions, or the first token
 */
export const TransformerSpec = z
  .strictObject({
    type: z.literal('transformer'),
    vocab: z.number().int().min(2, 'a vocabulary needs at least 2 tokens'),
    seq_len: positiveInt,
    dim: positiveInt,
    heads: positiveInt,
    layers: z
      .number()
      .int()
      .min(1, 'a Transformer needs at least one encoder layer')
      .max(MAX_MODEL_LAYERS, `a Transformer has at most ${MAX_MODEL_LAYERS} encoder layers`),
    ffn: positiveInt,
    classes: z.number().int().min(2, 'a classifier needs at least 2 classes'),
    dropout: z.number().min(0).lt(1).default(0),
    pool: z.enum(['mean', 'first']).default('mean'),
  })
  .superRefine((spec, ctx) => {
    if (spec.dim % spec.heads !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['dim'],
        message: `dim ${spec.dim} is not a multiple of heads ${spec.heads}`,
      });
    }
  });
export type TransformerSpec = z.infer<typeof TransformerSpec>;
