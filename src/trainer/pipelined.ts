/**
 * A pipelined run (`pipeline:`): the model's blocks cut into P stages, world = P × D, rank = stage × D + replica.
 * Each rank's engine trains its stage's blocks over its stage's data-parallel group; one optimizer step is the
 * job's schedule (GPipe or 1F1B) over the stages (src/pipeline/runtime.ts). Every stage of a replica reads the
 * same sampler, so the last stage takes its labels (and a teacher its inputs) straight from the data set at the
 * indices stage 0 fed in. Evaluation is pipelined too: test batches flow through the stages and the last one
 * counts the hits.
 */
import { tf } from '../backend/tf.ts';
import { type Collectives, shardRange, type WireDtype } from '../comm/types.ts';
import type { PipelineSpec } from '../config/pipeline.ts';
import { gatherBatch, type LabeledSet } from '../data/labeled-set.ts';
import type { Engine } from '../engine/engine.ts';
import { countParams, type Net, netParams } from '../engine/net.ts';
import {
  formatLayout,
  type PipelineLayout,
  pipelineLayout,
  rankOf,
  replicaOf,
  stageOf,
} from '../pipeline/layout.ts';
import { partitionNet, type StageRange } from '../pipeline/partition.ts';
import { runStageStep } from '../pipeline/runtime.ts';
import { idealBubble } from '../pipeline/schedule.ts';
import { activationShape, stageNet } from '../pipeline/stage-net.ts';
import type { Timeline } from '../trace/timeline.ts';
import type { Placement } from './placement.ts';

/** Tags of the evaluation's and the weights' transfers: far above the schedule's (2 × micro-batch + 0|1). */
const EVAL_TAG = 1 << 29;
const GATHER_TAG = (1 << 29) + 1;
const EVAL_BATCH = 512;

export interface PipelineOptions {
  readonly spec: PipelineSpec;
  readonly model: Net;
  /** The run's world: P × D ranks. */
  readonly pg: Collectives;
  readonly microBatch: number;
  /** The wire of activations and their gradients between stages. */
  readonly wireDtype: WireDtype;
  readonly timeline: Timeline;
}

/** Where this rank sits in the pipeline. */
interface StagePlace {
  readonly layout: PipelineLayout;
  readonly ranges: readonly StageRange[];
  readonly stage: number;
  readonly replica: number;
  readonly last: boolean;
  /** The ranks of this replica's pipeline, in pipeline-stage order: the neighbours are found there. */
  readonly pipelineRanks: readonly number[];
  /** This pipeline stage's blocks. */
  readonly net: Net;
}

/** This rank's stage of a pipelined run (makes the stages' data-parallel groups: every rank of `pg` calls it). */
export function pipelined(o: PipelineOptions): Placement {
  const { spec, model, pg } = o;
  const layout = pipelineLayout(pg.size, spec.stages);
  const ranges = partitionNet(model, spec.stages, spec.partition);
  const stage = stageOf(layout, pg.rank);
  const replica = replicaOf(layout, pg.rank);
  const { from, to } = ranges[stage];
  const last = stage === spec.stages - 1;
  const place: StagePlace = {
    layout,
    ranges,
    stage,
    replica,
    last,
    pipelineRanks: layout.pipelines[replica],
    net: stageNet(model, from, to),
  };
  const io = {
    input: [o.microBatch, ...place.net.inputShape],
    output: last ? [] : [o.microBatch, ...activationShape(model, to)],
  };
  const idle = { busy: 0, window: 0, peak: 0 };
  return {
    layout: formatLayout(layout, {
      ranges,
      blockNames: model.blocks.map((b) => b.name),
      schedule: spec.schedule,
      microBatches: spec.micro_batches,
    }),
    replicas: layout.replicas,
    replica,
    model,
    net: place.net,
    computesLoss: last,
    groups: { pg: pg.newGroup(layout.dataParallelGroups[stage]), normGroup: pg, lossRanks: layout.replicas },
    offset: ranges.slice(0, stage).reduce((n, r) => n + countParams(stageNet(model, r.from, r.to)), 0),
    async step(engine, input, steady) {
      const result = await runStageStep({
        engine,
        schedule: spec.schedule,
        stages: spec.stages,
        stage,
        microBatches: spec.micro_batches,
        comm: pg,
        wireDtype: o.wireDtype,
        pipelineRanks: place.pipelineRanks,
        inputShape: io.input,
        outputShape: io.output,
        step: input.step,
        timeline: o.timeline,
        mode: (micro) => input.mode(micro),
        input: (micro) => input.input(micro),
        lossBatch: (micro, x) => input.lossBatch(micro, x),
      });
      idle.peak = Math.max(idle.peak, result.peakLiveActivations);
      if (steady) {
        idle.busy += result.busyMs;
        idle.window += result.pipelineMs;
      }
      return result.stats;
    },
    evaluate: (engine, set) => pipelineAccuracy(place, o, engine, set),
    async inference(engine, set) {
      // Through the whole pipeline (every stage and replica at once), not one rank's forward.
      const t0 = performance.now();
      await pipelineAccuracy(place, o, engine, set);
      return set.length / ((performance.now() - t0) / 1000);
    },
    modelValues: (engine) => gatherModel(place, o, engine),
    figures: () => pipelineFigures(place, o, idle),
  };
}

/** The bubble (every rank's idle fraction, averaged) and each pipeline stage's peak live activations. */
async function pipelineFigures(
  place: StagePlace,
  { spec, pg }: PipelineOptions,
  idle: { busy: number; window: number; peak: number },
) {
  const sums = new Float32Array([idle.window > 0 ? 1 - idle.busy / idle.window : 0]);
  await pg.allReduce(sums, { op: 'sum', dtype: 'fp32' });
  const peaks = new Float32Array(spec.stages);
  peaks[place.stage] = idle.peak;
  await pg.allReduce(peaks, { op: 'max', dtype: 'fp32' });
  return {
    pipeline_stages: spec.stages,
    data_parallel: place.layout.replicas,
    micro_batches: spec.micro_batches,
    pipeline_schedule: spec.schedule,
    bubble: sums[0] / pg.size,
    bubble_ideal: idealBubble(spec.stages, spec.micro_batches),
    peak_live_activations: Array.from(peaks),
  };
}

/**
 * Top-1 accuracy over `set`, pipelined: each replica takes its shard, stage 0 feeds batches in, the last stage
 * counts the hits, one all-reduce over the world adds them up.
 */
async function pipelineAccuracy(
  place: StagePlace,
  { model, pg }: PipelineOptions,
  engine: Engine,
  set: LabeledSet,
): Promise<number> {
  const { stage, last, pipelineRanks, layout } = place;
  const { start, end } = shardRange(set.length, layout.replicas, place.replica);
  const all = Int32Array.from({ length: set.length }, (_, i) => i);
  const mode = { training: false, seed: 0 };
  let correct = 0;
  for (let at = start; at < end; at += EVAL_BATCH) {
    const count = Math.min(EVAL_BATCH, end - at);
    const { inputs, labels } = gatherBatch(set, all, at, count);
    const x =
      stage === 0
        ? tf.tensor(inputs, [count, ...model.inputShape], model.inputDtype)
        : tf.tensor(await pg.recv(pipelineRanks[stage - 1], EVAL_TAG), [count, ...place.net.inputShape]);
    const y = await engine.forwardMicroBatch(x, mode);
    x.dispose();
    if (last) {
      const predicted = tf.tidy(() => tf.argMax(y, -1).dataSync());
      for (let i = 0; i < count; i++) if (predicted[i] === labels[i]) correct++;
    } else await pg.send((await y.data()) as Float32Array, pipelineRanks[stage + 1], EVAL_TAG);
    y.dispose();
  }
  const counts = new Float32Array(last ? [correct, end - start] : [0, 0]);
  await pg.allReduce(counts, { op: 'sum', dtype: 'fp32' });
  return counts[0] / counts[1];
}

/** The model's parameters on rank 0: each pipeline stage's first replica sends its blocks' values. */
async function gatherModel(
  place: StagePlace,
  { model, pg }: PipelineOptions,
  engine: Engine,
): Promise<Float32Array[] | undefined> {
  // Collective within the stage's group (ZeRO shards); the objective's parameters follow the net's and stay.
  const values = (await engine.fullParams()).subarray(0, countParams(place.net));
  if (pg.rank !== 0) {
    if (place.replica === 0) await pg.send(values.slice(), 0, GATHER_TAG);
    return undefined;
  }
  const parts = [values];
  for (let s = 1; s < place.layout.stages; s++)
    parts.push(await pg.recv(rankOf(place.layout, s, 0), GATHER_TAG));
  return splitTensors(model, parts);
}

/** Stage-ordered flat parts of the whole model's parameters, as one array per tensor. */
function splitTensors(model: Net, parts: readonly Float32Array[]): Float32Array[] {
  const flat = new Float32Array(parts.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of parts) {
    flat.set(a, at);
    at += a.length;
  }
  const out: Float32Array[] = [];
  at = 0;
  for (const p of netParams(model)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    out.push(flat.slice(at, at + size));
    at += size;
  }
  if (at !== flat.length) throw new Error(`gathered ${flat.length} parameters for a net of ${at}`);
  return out;
}
