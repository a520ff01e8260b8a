/**
 * Pipeline schedules as data: for P stages and M micro-batches, what each stage computes in which order, and
 * where its activations and gradients cross to the neighbouring stages. The runtime executes a stage's program
 * op by op; the simulator below runs all programs together to show they cannot deadlock and what they cost.
 *
 *   GPipe (Huang et al. 2019): every forward, then every backward; a stage holds all M activations at once.
 *   1F1B (PipeDream-Flush, Narayanan et al. 2021; Megatron-LM's default): stage s runs min(P−s−1, M) warm-up
 *   forwards, then alternates one forward and one backward, then drains the remaining backwards; it holds at most
 *   P−s activations. Both take (M+P−1)·(f+b) per batch with equal stage times: the same bubble, (P−1)/(M+P−1).
 */
import type { PipelineScheduleName } from '../config/pipeline.ts';

export type ScheduleName = PipelineScheduleName;

/** One micro-batch's forward or backward through this stage's blocks. */
export interface Compute {
  readonly kind: 'forward' | 'backward';
  readonly micro: number;
}

/**
 * A tensor crossing between neighbouring stages: the activation a forward produced (to the next stage), or the
 * gradient with respect to a stage's input that its backward produced (to the previous stage).
 */
export interface Transfer {
  readonly what: 'activation' | 'gradient';
  readonly micro: number;
  /** The other stage. */
  readonly peer: number;
}

/**
 * Sends and receives posted together, complete when all are (torch's batch_isend_irecv, Megatron's
 * send_forward_recv_backward). Fusing the send of one compute's output with the receive of the next one's input
 * is what keeps 1F1B deadlock-free under blocking point-to-point: two neighbours each sending to the other
 * first would wait forever.
 */
export interface Comm {
  readonly kind: 'comm';
  readonly sends: readonly Transfer[];
  readonly recvs: readonly Transfer[];
}

export type StageOp = Compute | Comm;

function checkShape(stages: number, micro: number, stage?: number): void {
  if (!Number.isInteger(stages) || stages < 1)
    throw new RangeError(`stages must be a positive integer, got ${stages}`);
  if (!Number.isInteger(micro) || micro < 1)
    throw new RangeError(`micro-batches must be a positive integer, got ${micro}`);
  if (stage !== undefined && (!Number.isInteger(stage) || stage < 0 || stage >= stages))
    throw new RangeError(`stage ${stage} is outside 0..${stages - 1}`);
}

const fwd = (micro: number): Compute => ({ kind: 'forward', micro });
const bwd = (micro: number): Compute => ({ kind: 'backward', micro });
const range = (from: number, to: number) =>
  Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);

/** What `stage` computes, in order, for one batch of `micro` micro-batches. */
export function computeOrder(
  schedule: ScheduleName,
  stages: number,
  micro: number,
  stage: number,
): Compute[] {
  checkShape(stages, micro, stage);
  if (schedule === 'gpipe') return [...range(0, micro).map(fwd), ...range(0, micro).map(bwd)];
  const warmup = Math.min(stages - stage - 1, micro);
  return [
    ...range(0, warmup).map(fwd),
    ...range(0, micro - warmup).flatMap((i) => [fwd(warmup + i), bwd(i)]),
    ...range(micro - warmup, micro).map(bwd),
  ];
}

/** What `c` needs from a neighbour before it can run on `stage`. */
function inputsOf(c: Compute, stage: number, stages: number): Transfer[] {
  if (c.kind === 'forward') return stage > 0 ? [{ what: 'activation', micro: c.micro, peer: stage - 1 }] : [];
  return stage < stages - 1 ? [{ what: 'gradient', micro: c.micro, peer: stage + 1 }] : [];
}

/** What `c` hands to a neighbour once it ran on `stage`. */
function outputsOf(c: Compute, stage: number, stages: number): Transfer[] {
  if (c.kind === 'forward')
    return stage < stages - 1 ? [{ what: 'activation', micro: c.micro, peer: stage + 1 }] : [];
  return stage > 0 ? [{ what: 'gradient', micro: c.micro, peer: stage - 1 }] : [];
}

/**
 * `stage`'s full program: its compute order with the transfers placed. Before each compute one `Comm` sends
 * what the previous compute produced and receives what this one needs; a last `Comm` sends the final output.
 */
export function stageProgram(
  schedule: ScheduleName,
  stages: number,
  micro: number,
  stage: number,
): StageOp[] {
  const order = computeOrder(schedule, stages, micro, stage);
  const ops: StageOp[] = [];
  let pending: Transfer[] = [];
  for (const c of order) {
    const recvs = inputsOf(c, stage, stages);
    if (pending.length > 0 || recvs.length > 0) ops.push({ kind: 'comm', sends: pending, recvs });
    ops.push(c);
    pending = outputsOf(c, stage, stages);
  }
  if (pending.length > 0) ops.push({ kind: 'comm', sends: pending, recvs: [] });
  return ops;
}

/** Every stage's program, stage by stage. */
export function schedulePrograms(schedule: ScheduleName, stages: number, micro: number): StageOp[][] {
  checkShape(stages, micro);
  return range(0, stages).map((s) => stageProgram(schedule, stages, micro, s));
}

/**
 * The point-to-point tag of a transfer: sender and receiver compute the same one, and activations and gradients
 * of different micro-batches never match each other's receives.
 */
export function transferTag(t: Pick<Transfer, 'what' | 'micro'>): number {
  return 2 * t.micro + (t.what === 'gradient' ? 1 : 0);
}

/** Short text of a compute order, e.g. `F0 F1 B0 F2 B1 B2`: for tests, logs and `--dry-run`. */
export function describeOrder(order: readonly StageOp[]): string {
  return order
    .filter((op): op is Compute => op.kind !== 'comm')
    .map((c) => `${c.kind === 'forward' ? 'F' : 'B'}${c.micro}`)
    .join(' ');
}

/**
 * The most micro-batches whose activations a stage holds at once: a forward stashes its activations until the
 * same micro-batch's backward has run.
 */
export function peakLiveActivations(order: readonly StageOp[]): number {
  let live = 0;
  let peak = 0;
  for (const op of order) {
    if (op.kind === 'forward') peak = Math.max(peak, ++live);
    else if (op.kind === 'backward') live--;
  }
  return peak;
}

/** The idle fraction of every stage with equal stage times, for GPipe and 1F1B alike: (P−1)/(M+P−1). */
export function idealBubble(stages: number, micro: number): number {
  checkShape(stages, micro);
  return (stages - 1) / (micro + stages - 1);
}

export interface SimulationOptions {
  /** Time of one micro-batch's forward through one stage: the same on every stage, or per stage. Default 1. */
  readonly forwardTime?: number | readonly number[];
  /** Time of one micro-batch's backward through one stage, or per stage. Default 2 (about twice a forward). */
  readonly backwardTime?: number | readonly number[];
  /** Time a matched transfer takes. Default 0. */
  readonly commTime?: number;
  /**
   * `rendezvous`: a send completes only when the receiver has posted its receive (MPI's synchronous send, the
   * strictest blocking model); `buffered`: a send completes at once and the message waits for its receive.
   * A program that cannot deadlock under `rendezvous` cannot deadlock under `buffered` either.
   */
  readonly semantics?: 'rendezvous' | 'buffered';
}

/** One stretch of a simulated stage's time: a compute, or a `Comm` from posting to completion (waiting included). */
export interface SimSpan {
  readonly kind: 'forward' | 'backward' | 'comm';
  readonly micro?: number;
  readonly start: number;
  readonly end: number;
}

export interface StageSimulation {
  readonly stage: number;
  readonly spans: readonly SimSpan[];
  /** Time spent computing. */
  readonly busy: number;
  /** 1 − busy / makespan: this stage's bubble. */
  readonly idle: number;
  readonly peakLiveActivations: number;
}

export interface SimulationResult {
  /** When the last stage finishes; every stage starts at 0. */
  readonly makespan: number;
  readonly stages: readonly StageSimulation[];
  /** Mean idle fraction over the stages. */
  readonly bubble: number;
}

/** The programs cannot all finish: `stuck` is where each unfinished stage waits. */
export class DeadlockError extends Error {
  constructor(readonly stuck: readonly { stage: number; op: StageOp }[]) {
    super(
      `pipeline schedule deadlocks: ${stuck
        .map(({ stage, op }) => `stage ${stage} waits in ${describeOp(op)}`)
        .join('; ')}`,
    );
    this.name = 'DeadlockError';
  }
}

/** A program that computes with data it does not have, or leaves data unconsumed. */
export class ScheduleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleError';
  }
}

function describeTransfer(t: Transfer): string {
  return `${t.what} ${t.micro} ${t.peer}`;
}

function describeOp(op: StageOp): string {
  if (op.kind !== 'comm') return `${op.kind} ${op.micro}`;
  const s = op.sends.map((t) => `send ${describeTransfer(t)}`);
  const r = op.recvs.map((t) => `recv ${describeTransfer(t)}`);
  return `comm(${[...s, ...r].join(', ')})`;
}

interface Posted {
  readonly at: number;
  /** Completion time of each send and receive, once matched. */
  readonly sendsDone: (number | undefined)[];
  readonly recvsDone: (number | undefined)[];
}

const key = (from: number, to: number, t: Pick<Transfer, 'what' | 'micro'>) =>
  `${from}>${to}:${transferTag(t)}`;

/**
 * Runs every stage's program against the others with fixed op times and blocking point-to-point, checking that
 * each compute has its inputs (a forward its activation, a backward its own forward and the gradient from the
 * next stage) and that every transfer is received. Throws `DeadlockError` when no stage can move.
 */
export function simulate(
  programs: readonly (readonly StageOp[])[],
  opts: SimulationOptions = {},
): SimulationResult {
  const P = programs.length;
  const perStage = (t: number | readonly number[] | undefined, fallback: number) =>
    programs.map((_, s) => (typeof t === 'number' ? t : (t?.[s] ?? fallback)));
  const f = perStage(opts.forwardTime, 1);
  const b = perStage(opts.backwardTime, 2);
  const c = opts.commTime ?? 0;
  const rendezvous = (opts.semantics ?? 'rendezvous') === 'rendezvous';
  const pc = new Array<number>(P).fill(0);
  const clock = new Array<number>(P).fill(0);
  const posted: (Posted | undefined)[] = new Array(P).fill(undefined);
  const spans: SimSpan[][] = programs.map(() => []);
  // What each stage holds: received transfers, and micro-batches whose forward it ran.
  const received = programs.map(() => new Set<string>());
  const forwarded = programs.map(() => new Set<number>());
  /** Buffered semantics: messages in flight, by sender > receiver : tag, with the time they can be received. */
  const inFlight = new Map<string, number>();

  const runCompute = (s: number, op: Compute) => {
    if (op.kind === 'forward') {
      if (s > 0 && !received[s].has(key(s - 1, s, { what: 'activation', micro: op.micro })))
        throw new ScheduleError(`stage ${s} runs forward ${op.micro} before receiving its activation`);
      forwarded[s].add(op.micro);
    } else {
      if (!forwarded[s].has(op.micro))
        throw new ScheduleError(`stage ${s} runs backward ${op.micro} before its forward`);
      if (s < P - 1 && !received[s].has(key(s + 1, s, { what: 'gradient', micro: op.micro })))
        throw new ScheduleError(`stage ${s} runs backward ${op.micro} before receiving its gradient`);
    }
    const start = clock[s];
    clock[s] += op.kind === 'forward' ? f[s] : b[s];
    spans[s].push({ kind: op.kind, micro: op.micro, start, end: clock[s] });
  };

  /** Matches what can be matched of stage s's posted comm; true when all of it is done. */
  const advanceComm = (s: number, op: Comm): boolean => {
    const mine = posted[s]!;
    op.sends.forEach((t, i) => {
      if (mine.sendsDone[i] !== undefined) return;
      if (t.peer < 0 || t.peer >= P)
        throw new ScheduleError(`stage ${s} sends to stage ${t.peer}, which does not exist`);
      if (!rendezvous) {
        inFlight.set(key(s, t.peer, t), mine.at + c);
        mine.sendsDone[i] = mine.at;
        return;
      }
      const peerOp = programs[t.peer][pc[t.peer]];
      const theirs = posted[t.peer];
      if (peerOp?.kind !== 'comm' || !theirs) return;
      const j = peerOp.recvs.findIndex((r) => r.peer === s && transferTag(r) === transferTag(t));
      if (j < 0 || theirs.recvsDone[j] !== undefined) return;
      const done = Math.max(mine.at, theirs.at) + c;
      mine.sendsDone[i] = done;
      theirs.recvsDone[j] = done;
      received[t.peer].add(key(s, t.peer, t));
    });
    if (!rendezvous) {
      op.recvs.forEach((t, i) => {
        if (mine.recvsDone[i] !== undefined) return;
        const k = key(t.peer, s, t);
        const at = inFlight.get(k);
        if (at === undefined) return;
        inFlight.delete(k);
        mine.recvsDone[i] = Math.max(mine.at, at);
        received[s].add(k);
      });
    }
    return [...mine.sendsDone, ...mine.recvsDone].every((d) => d !== undefined);
  };

  const finished = () => pc.every((p, s) => p >= programs[s].length);
  while (!finished()) {
    let moved = false;
    for (let s = 0; s < P; s++) {
      // Run stage s as far as it can go before looking at the next one.
      while (pc[s] < programs[s].length) {
        const op = programs[s][pc[s]];
        if (op.kind !== 'comm') {
          runCompute(s, op);
          pc[s]++;
          moved = true;
          continue;
        }
        if (!posted[s]) {
          posted[s] = {
            at: clock[s],
            sendsDone: op.sends.map(() => undefined),
            recvsDone: op.recvs.map(() => undefined),
          };
          moved = true;
        }
        if (!advanceComm(s, op)) break;
        const p = posted[s]!;
        const end = Math.max(p.at, ...(p.sendsDone as number[]), ...(p.recvsDone as number[]));
        spans[s].push({ kind: 'comm', start: p.at, end });
        clock[s] = end;
        posted[s] = undefined;
        pc[s]++;
        moved = true;
      }
    }
    if (!moved) {
      const stuck = range(0, P)
        .filter((s) => pc[s] < programs[s].length)
        .map((s) => ({ stage: s, op: programs[s][pc[s]] }));
      throw new DeadlockError(stuck);
    }
  }
  for (let s = 0; s < P; s++) {
    const pendingGrad = [...forwarded[s]].filter(
      (m) => !spans[s].some((x) => x.kind === 'backward' && x.micro === m),
    );
    if (pendingGrad.length > 0)
      throw new ScheduleError(
        `stage ${s} never runs the backward of micro-batch(es) ${pendingGrad.join(', ')}`,
      );
  }
  if (inFlight.size > 0)
    throw new ScheduleError(`sent but never received: ${[...inFlight.keys()].join(', ')}`);

  const makespan = Math.max(0, ...clock);
  const stages = programs.map((prog, s) => {
    const busy = spans[s].filter((x) => x.kind !== 'comm').reduce((sum, x) => sum + (x.end - x.start), 0);
    return {
      stage: s,
      spans: spans[s],
      busy,
      idle: makespan > 0 ? 1 - busy / makespan : 0,
      peakLiveActivations: peakLiveActivations(prog),
    };
  });
  return { makespan, stages, bubble: stages.reduce((sum, x) => sum + x.idle, 0) / Math.max(1, P) };
}
