/**
 * Data parallel (with ZeRO 0–3 inside the engine): every rank trains the whole net on its own micro-batches and
 * the engine averages the gradients over the world.
 */
import type { Collectives } from '../comm/types.ts';
import type { Net } from '../engine/net.ts';
import { evaluateAccuracy, inferenceSamplesPerSecond } from './evaluate.ts';
import type { Placement } from './placement.ts';

export function dataParallel(net: Net, pg: Collectives): Placement {
  return {
    layout: undefined,
    replicas: pg.size,
    replica: pg.rank,
    model: net,
    net,
    computesLoss: true,
    groups: { pg },
    offset: 0,
    step: (engine, input) => engine.step((micro) => input.lossBatch(micro)),
    evaluate: (engine, set) => evaluateAccuracy(engine, net.inputShape, set, pg),
    // One rank's forward passes, as a served model would run.
    inference: (engine, set) => inferenceSamplesPerSecond(engine, net, set, pg.rank === 0),
    modelValues: async (engine) => {
      const flat = await engine.fullParams();
      if (pg.rank !== 0) return undefined;
      // The net's tensors only: the objective's (projections) follow them in the flat space.
      const objective = engine.groups.groups[engine.groups.objective];
      return engine.slots
        .filter((s) => !objective.slots.includes(s))
        .map((s) => flat.slice(s.offset, s.offset + s.size));
    },
    figures: async () => ({}),
  };
}
