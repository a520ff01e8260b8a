import { z } from 'zod';
import { MAX_MODEL_LAYERS } from './limits.ts';

const positiveInt = z.number().int().positive();

/**
 * The job file's `model: {type: transformer}` (built by src/models/transformer.ts). Defined here, with the
 * other model specs, because the config layer validates jobs without importing the models.
 */
export const TransformerSpec = z
  .strictObject({
    type: z.literal('transformer'),
    vocab: z
      .number()
      .int()
      .min(2, 'a vocabulary needs at least 2 tokens')
      .describe('token ids 0 … vocab − 1'),
    seq_len: positiveInt.describe('tokens per sample (learned position embeddings, one per position)'),
    dim: positiveInt.describe('hidden size; a multiple of heads'),
    heads: positiveInt.describe('attention heads'),
    layers: z
      .number()
      .int()
      .min(1, 'a Transformer needs at least one encoder layer')
      .max(MAX_MODEL_LAYERS, `a Transformer has at most ${MAX_MODEL_LAYERS} encoder layers`)
      .describe('encoder blocks'),
    ffn: positiveInt.describe('feed-forward inner size'),
    classes: z
      .number()
      .int()
      .min(2, 'a classifier needs at least 2 classes')
      .describe('linear outputs (logits)'),
    dropout: z
      .number()
      .min(0)
      .lt(1)
      .default(0)
      .describe(
        'dropout of the embeddings, the attention probabilities, and the attention and feed-forward outputs',
      ),
    layer_heads: z
      .array(positiveInt)
      .optional()
      .describe(
        'heads kept in each encoder layer, of size dim / heads each (what heads pruning writes); default heads in every layer',
      ),
    pool: z
      .enum(['mean', 'first'])
      .default('mean')
      .describe("the head's summary of the sequence: the mean of the positions, or the first token"),
  })
  .superRefine((spec, ctx) => {
    if (spec.dim % spec.heads !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['dim'],
        message: `dim ${spec.dim} is not a multiple of heads ${spec.heads}`,
      });
    }
    const kept = spec.layer_heads;
    if (kept && kept.length !== spec.layers) {
      ctx.addIssue({
        code: 'custom',
        path: ['layer_heads'],
        message: `layer_heads has ${kept.length} entries for the Transformer's ${spec.layers} layers`,
      });
    }
    kept?.forEach((h, i) => {
      if (h > spec.heads) {
        ctx.addIssue({
          code: 'custom',
          path: ['layer_heads', i],
          message: `layer ${i} keeps ${h} heads, more than the model's ${spec.heads}`,
        });
      }
    });
  })
  .meta({
    description: "A Transformer encoder classifier over int32 token ids (BERT's shape, post-LN).",
    examples: [
      `model:
  type: transformer
  vocab: 20
  seq_len: 16
  dim: 64
  heads: 4
  layers: 4
  ffn: 128
  classes: 8
  dropout: 0.1
  pool: mean`,
    ],
  });
export type TransformerSpec = z.infer<typeof TransformerSpec>;
