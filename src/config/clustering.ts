/**
 * The job file's `clustering:` section: weight sharing as tfmot's `cluster_weights` (its keys where it has them):
 * each weight matrix and kernel of a trained model clustered into `clusters` values, fine-tuned with the values
 * shared, written as cluster indices and a codebook.
 */
import { z } from 'zod';

export const ClusteringSpec = z
  .strictObject({
    clusters: z
      .number()
      .int()
      .min(2, 'clusters is 2 to 256: one value per tensor is no model')
      .max(256, 'clusters is 2 to 256 (an index is one byte at most)')
      .describe('values per tensor (tfmot: `number_of_clusters`); 16 and fewer store 4-bit indices'),
    init: z
      .enum(['linear', 'kmeans++'])
      .default('linear')
      .describe(
        "the centroids before k-means (tfmot: `cluster_centroids_init`): evenly spaced over the tensor's range, or k-means++",
      ),
    iterations: z.number().int().min(0).default(20).describe('Lloyd iterations of the first clustering'),
  })
  .describe(
    "Weight sharing (tfmot's `cluster_weights`): each weight matrix and kernel of a trained model is clustered by 1-D k-means into `clusters` values, then trained with every weight of a cluster holding the cluster's value (after each update, the mean of its weights; the assignments fixed; a pruned tensor's zeros kept as a cluster of their own). The model is written as cluster indices and a codebook per tensor. It starts from a trained model: `model: {stage: NAME}` or `{path: DIR}`.",
  );
export type ClusteringSpec = z.infer<typeof ClusteringSpec>;
