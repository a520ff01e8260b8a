/**
 * One optimizer step of one pipeline stage: the stage's program from `stageProgram` executed op by op. Forwards
 * run outside the tape and stash only the stage's input; each backward recomputes the stage's forward under the
 * tape from that input (the engine's `backwardMicroBatch`), so a stage holds one input per live micro-batch and
 * nothing else. Activations go to the next stage and input gradients to the previous one as point-to-point
 * messages tagged by `transferTag`; the engine accumulates the M micro-batches' gradients and takes one
 * optimizer step at the end, reducing within the stage's data-parallel group and summing the global gradient
 * norm over every stage.
 *
 * Activations and their gradients travel in `wireDtype` (fp16/bf16 halve the bytes; the receiver decodes to fp32).
 */
import { tf } from '../backend/tf.ts';
import type { Collectives, WireDtype } from '../comm/types.ts';
import type { Engine, MicroBatch, StepStats } from '../engine/engine.ts';
import type { ForwardMode } from '../engine/net.ts';
import type { SpanCategory, SpanMeta, Timeline } from '../trace/timeline.ts';
import {
  type Comm,
  type Compute,
  type ScheduleName,
  stageProgram,
  type Transfer,
  transferTag,
} from './schedule.ts';

export interface StageStepOptions {
  /**
   * The stage's engine: its net is the stage's blocks, its group the stage's data-parallel group. Give it the same
   * timeline for its reduction and optimizer spans.
   */
  readonly engine: Engine;
  readonly schedule: ScheduleName;
  readonly stages: number;
  readonly stage: number;
  readonly microBatches: number;
  /** The group activations and gradients travel on, and the step's closing barrier runs over (the job's world). */
  readonly comm: Collectives;
  /** The wire of activations and their gradients (default fp32). */
  readonly wireDtype?: WireDtype;
  /** Ranks in `comm` of this pipeline's stages, in stage order: the neighbours are found there. */
  readonly pipelineRanks: readonly number[];
  /** One micro-batch's activation as the stage receives it, batch dimension included (stages after the first). */
  readonly inputShape: readonly number[];
  /** One micro-batch's output, batch dimension included: the shape of the gradient the next stage sends back. */
  readonly outputShape: readonly number[];
  /** The optimizer step, for the spans' metadata. */
  readonly step: number;
  readonly timeline: Timeline;
  /** The dropout masks of a micro-batch: the same on every stage of a pipeline. */
  mode(micro: number): ForwardMode;
  /** Stage 0: the micro-batch's input. The runtime owns it from then on (and disposes it). */
  input?(micro: number): tf.Tensor;
  /**
   * The last stage: the micro-batch whose loss starts the backward, for the stage input `x` (labels, teacher
   * outputs, the objective). Its `dispose` frees what it made; `x` is the runtime's.
   */
  lossBatch?(micro: number, x: tf.Tensor): Promise<MicroBatch>;
}

export interface StageStepResult {
  readonly stats: StepStats;
  /** Mean micro-batch loss of this stage (the last stage's; 0 elsewhere). */
  readonly stageLoss: number;
  /** The most micro-batch inputs this stage held at once, waiting for their backward. */
  readonly peakLiveActivations: number;
  /** Time in forward and backward compute, ms. */
  readonly busyMs: number;
  /** From the first op of the program to the end of the closing barrier, ms: every stage's window ends together. */
  readonly pipelineMs: number;
}

/** Runs one optimizer step of `o.stage`; every rank of the world calls it once per step (see the module comment). */
export async function runStageStep(o: StageStepOptions): Promise<StageStepResult> {
  const { engine, stage, stages, timeline, step } = o;
  const last = stage === stages - 1;
  if (stage === 0 && !o.input) throw new Error('stage 0 needs the micro-batches’ inputs');
  if (last && !o.lossBatch) throw new Error('the last stage needs the micro-batches’ loss');
  const rankOf = (peer: number) => {
    const r = o.pipelineRanks[peer];
    if (r === undefined) throw new RangeError(`no stage ${peer} in a pipeline of ${o.pipelineRanks.length}`);
    return r;
  };

  const spent: Partial<Record<SpanCategory, number>> = {};
  const timed = async <T>(name: string, cat: SpanCategory, fn: () => Promise<T>, micro?: number) => {
    const t0 = performance.now();
    const meta: SpanMeta = micro === undefined ? { step } : { step, micro };
    try {
      return await timeline.span(name, cat, fn, meta);
    } finally {
      spent[cat] = (spent[cat] ?? 0) + performance.now() - t0;
    }
  };

  /** Inputs kept from a micro-batch's forward until its backward: the stage's live activations. */
  const stash = new Map<number, tf.Tensor>();
  /** Received activations and gradients, by tag, until the compute that uses them. */
  const inbox = new Map<number, tf.Tensor>();
  /** Produced activations and gradients, by tag, until the comm that sends them. */
  const outbox = new Map<number, Float32Array>();
  let peak = 0;
  let lossSum = 0;

  const inFlight: Promise<unknown>[] = [];
  const runComm = async (op: Comm) => {
    // The span covers posting the sends (encoding, handing the bytes to ZeroMQ), not their delivery.
    const sends =
      op.sends.length === 0
        ? []
        : await timed(
            describeSends(op.sends),
            'send',
            async () =>
              op.sends.map((t) => {
                const buf = outbox.get(transferTag(t));
                if (!buf)
                  throw new Error(`stage ${stage} has no ${t.what} of micro-batch ${t.micro} to send`);
                outbox.delete(transferTag(t));
                return o.comm.send(buf, rankOf(t.peer), transferTag(t), { dtype: o.wireDtype ?? 'fp32' });
              }),
            op.sends[0].micro,
          );
    // Receiving is what the schedule waits on; the sends complete in the background.
    const sent = Promise.all(sends);
    sent.catch(() => {}); // a failed receive is reported first; the send's error is awaited below
    for (const t of op.recvs) {
      const buf = await timed(
        `recv ${t.what} ${t.micro}`,
        'recv',
        () => o.comm.recv(rankOf(t.peer), transferTag(t)),
        t.micro,
      );
      inbox.set(
        transferTag(t),
        tf.tensor(buf, [...(t.what === 'activation' ? o.inputShape : o.outputShape)]),
      );
    }
    // Not awaited here: a large send completes only when the peer's event loop takes it, and waiting for that
    // would stall this stage until the peer's current compute ends. The buffers are ours; the step ends by
    // waiting for every send.
    if (op.sends.length > 0) inFlight.push(sent);
  };

  const forward = async (c: Compute) => {
    const x =
      stage === 0
        ? o.input!(c.micro)
        : take(inbox, transferTag({ what: 'activation', micro: c.micro }), stage, 'activation');
    stash.set(c.micro, x);
    peak = Math.max(peak, stash.size);
    const y = await engine.forwardMicroBatch(x, o.mode(c.micro));
    // The last stage's output only feeds the loss, which its backward computes again under the tape.
    if (!last) outbox.set(transferTag({ what: 'activation', micro: c.micro }), await values(y));
    y.dispose();
  };

  const backward = async (c: Compute) => {
    const x = stash.get(c.micro);
    if (!x) throw new Error(`stage ${stage} runs backward ${c.micro} before its forward`);
    const mode = o.mode(c.micro);
    let upstream: tf.Tensor | MicroBatch;
    if (last) upstream = await o.lossBatch!(c.micro, x);
    else upstream = take(inbox, transferTag({ what: 'gradient', micro: c.micro }), stage, 'gradient');
    try {
      const { dx, loss } = await engine.backwardMicroBatch(x, mode, upstream, stage > 0);
      if (loss !== undefined) lossSum += loss;
      if (dx) {
        outbox.set(transferTag({ what: 'gradient', micro: c.micro }), await values(dx));
        dx.dispose();
      }
    } finally {
      upstream.dispose();
      stash.delete(c.micro);
      x.dispose();
    }
  };

  const t0 = performance.now();
  return timeline.span(
    `step ${step}`,
    'step',
    async () => {
      engine.beginStep();
      try {
        for (const op of stageProgram(o.schedule, stages, o.microBatches, stage)) {
          if (op.kind === 'comm') await runComm(op);
          else if (op.kind === 'forward')
            await timed(`forward ${op.micro}`, 'forward', () => forward(op), op.micro);
          else {
            await timed(`backward ${op.micro}`, 'backward', () => backward(op), op.micro);
            // ZeRO-2 reduce-scatters each micro-batch's gradient within the data-parallel group.
            if (engine.zeroStage >= 2)
              await timed(`reduce-scatter ${op.micro}`, 'allreduce', () => engine.endMicroBatch(), op.micro);
            else await engine.endMicroBatch();
          }
        }
        await timed('sends in flight', 'send', () => Promise.all(inFlight));
      } finally {
        tf.dispose([...stash.values(), ...inbox.values()]);
      }
      // Every stage waits here for the slowest: the rest of its pipeline time is bubble, and the engine's
      // all-reduce spans after it measure the reduction alone.
      await timed('wait for the other stages', 'wait', () => o.comm.barrier());
      const pipelineMs = performance.now() - t0;
      const stageLoss = last ? lossSum / o.microBatches : 0;
      // The engine records the reduction, the small all-reduce and the optimizer as spans of their own.
      const stats = await engine.finishStep(stageLoss);
      return {
        stats,
        stageLoss,
        peakLiveActivations: peak,
        busyMs: (spent['forward'] ?? 0) + (spent['backward'] ?? 0),
        pipelineMs,
      };
    },
    { step },
  );
}

function describeSends(sends: readonly Transfer[]): string {
  return sends.map((t) => `send ${t.what} ${t.micro}`).join(', ');
}

function take(inbox: Map<number, tf.Tensor>, tag: number, stage: number, what: string): tf.Tensor {
  const t = inbox.get(tag);
  if (!t) throw new Error(`stage ${stage} computes without the ${what} it should have received (tag ${tag})`);
  inbox.delete(tag);
  return t;
}

async function values(t: tf.Tensor): Promise<Float32Array> {
  const v = await t.data();
  if (!(v instanceof Float32Array)) throw new Error(`pipeline tensors travel as float32, got ${t.dtype}`);
  return v;
}
