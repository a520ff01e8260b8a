/**
 * How one rank takes part in a training run: the one training loop (train.ts) asks its placement for the net it
 * trains, the group its engine reduces over and how one optimizer step runs. Data parallel runs the step on the
 * whole net (data-parallel.ts); a pipeline runs it as a schedule over stage nets (pipelined.ts). Everything else
 * (sampler, schedule, objective, checkpoints, progress, evaluation, the summary) is the loop's, written once.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Collectives } from '../comm/types.ts';
import type { LabeledSet } from '../data/labeled-set.ts';
import type { Engine, MicroBatch, StepStats } from '../engine/engine.ts';
import type { ForwardMode, Net } from '../engine/net.ts';

/** What the loop hands a placement for one optimizer step. */
export interface StepInput {
  /** The optimizer step about to run (0-based). */
  readonly step: number;
  /** Micro-batch `micro`'s dropout masks: the same wherever its blocks run. */
  mode(micro: number): ForwardMode;
  /** Micro-batch `micro`'s input, as the net's first block takes it; the caller owns (and disposes) it. */
  input(micro: number): tf.Tensor;
  /**
   * Micro-batch `micro` with its loss, for the net's output on stage input `x` (default: the input itself, owned
   * by the micro-batch). Labels and teacher outputs come from the data set, so they never travel between stages.
   */
  lossBatch(micro: number, x?: tf.Tensor): Promise<MicroBatch>;
}

/** A rank's place in the run's layout. */
export interface Placement {
  /** A line for the log describing the layout, when there is more to say than "data parallel". */
  readonly layout: string | undefined;
  /** The data-parallel replicas the sampler splits the data over, and this rank's replica. */
  readonly replicas: number;
  readonly replica: number;
  /** The whole model. */
  readonly model: Net;
  /** The blocks this rank's engine trains: the whole model, or its pipeline stage's. */
  readonly net: Net;
  /** This rank computes the loss, so the objective's trainable parameters (projections) live here. */
  readonly computesLoss: boolean;
  /** The engine's data-parallel group, the group the global norm is summed over, and the ranks with a loss. */
  readonly groups: {
    readonly pg: Collectives;
    readonly normGroup?: Collectives;
    readonly lossRanks?: number;
  };
  /**
   * Where this engine's flat space sits in the whole model's (the net's parameters in block order, then the
   * objective's): checkpoints are written and read in the whole model's space, so a pipelined checkpoint
   * resumes unsplit and the other way round.
   */
  readonly offset: number;
  /** One optimizer step over this rank's part; `steady`: the step counts for the steady-state figures. */
  step(engine: Engine, input: StepInput, steady: boolean): Promise<StepStats>;
  /** Top-1 accuracy over `set` (collective over the run's ranks). */
  evaluate(engine: Engine, set: LabeledSet): Promise<number>;
  /** Batched inference throughput over `set`, in samples per second (collective; see the implementations). */
  inference(engine: Engine, set: LabeledSet): Promise<number>;
  /** The model's parameters, one array per tensor, on the run's rank 0 (undefined elsewhere). Collective. */
  modelValues(engine: Engine): Promise<Float32Array[] | undefined>;
  /** Figures the summary adds for this layout (collective: every rank calls it once, after training). */
  figures(): Promise<Record<string, number | string | number[]>>;
}
