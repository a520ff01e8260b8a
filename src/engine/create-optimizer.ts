import type { OptimizerSpec } from '../config/schema.ts';
import { Adam } from './adam.ts';
import { Lamb } from './lamb.ts';
import type { Optimizer, PartialSumReducer, ShardLayout } from './optimizer.ts';
import { Sgd } from './sgd.ts';

/**
 * The optimizer a job's `optimizer` section names, for one shard of the flat space. `params.lr` is not used
 * here: the learning rate comes from the LR schedule at each step. `reducer` is needed by LAMB only, and only
 * when the shard does not hold every tensor whole.
 */
export function createOptimizer(
  spec: OptimizerSpec,
  layout: ShardLayout,
  reducer?: PartialSumReducer,
): Optimizer {
  switch (spec.type) {
    case 'SGD':
      return new Sgd(spec.params, layout);
    case 'Adam':
      return new Adam(spec.params, layout, false);
    case 'AdamW':
      return new Adam(spec.params, layout, true);
    case 'Lamb':
      return new Lamb(spec.params, layout, reducer);
  }
}
