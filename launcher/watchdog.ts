/**
 * The job's watchdog, on node 0 (whose ranks it hears directly; other nodes' through their agents): from every rank's pulse (launcher/pulse.ts) and every node's word, it notices a
 * silent rank, a lost node and a hang, and says who is at fault — following who waits on whom through the ranks'
 * open calls to the one that is not waiting (stopped, blocked, or somewhere else). It also names stragglers: a
 * rank whose time outside collectives per step is far above the others'. Pure logic over times it is given.
 */
import { describeEntry, type FlightEntry } from '../src/comm/flight-recorder.ts';
import type { Beat } from './pulse.ts';

export interface WatchdogOptions {
  world: number;
  /** Workers per node: rank r runs on node ⌊r / perNode⌋. */
  perNode: number;
  nodes: number;
  /** A rank (or another node) silent this long is lost (--heartbeat-timeout). */
  heartbeatTimeoutMs: number;
  /** A call open this long is a hang (--hang-timeout). */
  hangTimeoutMs: number;
}

/** A rank's last beat and when it arrived here (local time). */
export interface RankSeen {
  beat: Beat;
  at: number;
}

/** What a rank's host says of its process: Linux's state letter (R, S, D, T, Z…), when known. */
export type ProcessStateOf = (rank: number) => string | undefined;

export type Cause = 'silent-rank' | 'lost-node' | 'hang';

export interface RankRow {
  rank: number;
  node: number;
  pid: number | undefined;
  state: string;
  heartbeatAgeS: number | undefined;
  loopLagS: number | undefined;
  step: number | undefined;
  rssMiB: number | undefined;
  /** The world rank its open call receives from. */
  waitsOn: number | undefined;
  /** Its last calls, newest last, e.g. `allReduce #240 (group world) started 5.1 s ago, waits on rank 1`. */
  calls: string[];
}

/** What the watchdog found: one headline naming the cause, and every rank's row. */
export interface Diagnosis {
  cause: Cause;
  headline: string;
  /** The rank or node at fault, when one is. */
  rank?: number;
  node?: number;
  at: string;
  ranks: RankRow[];
}

/** A first beat may take this long: a worker loads its runtime before it starts its pulse. */
const FIRST_BEAT_GRACE_MS = 30_000;
/** A beat older than this (several missed beats) marks a rank as not responding, in a hang's diagnosis. */
const STALE_BEAT_MS = 2_000;
/** A loop lag above this marks a rank as blocked, in a hang's diagnosis. */
const BLOCKED_LAG_MS = 2_000;
/** Stragglers: over this window, a rank ≥ FACTOR × the median's time outside calls per step, by ≥ MIN_EXCESS_MS. */
const STRAGGLER_WINDOW_MS = 10_000;
const STRAGGLER_FACTOR = 3;
const STRAGGLER_MIN_EXCESS_MS = 20;
const STRAGGLER_MIN_STEPS = 3;
const STRAGGLER_REPEAT_MS = 60_000;

const PROCESS_STATES: Record<string, string> = {
  T: 'stopped by a signal (SIGSTOP?)',
  t: 'stopped by a debugger',
  D: 'in uninterruptible I/O (a stuck file system?)',
  Z: 'exited (a zombie)',
};

const s1 = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export class Watchdog {
  readonly #o: WatchdogOptions;
  readonly #seen = new Map<number, RankSeen>();
  readonly #heard = new Map<number, number>();
  readonly #samples = new Map<number, { at: number; step: number; waitMs: number }[]>();
  readonly #warned = new Map<number, number>();
  /** Ranks that exited and nodes that finished: silence from them is not news. */
  readonly #done = new Set<number>();
  readonly #nodesDone = new Set<number>();
  readonly #since: number;
  readonly #procState: ProcessStateOf;

  constructor(o: WatchdogOptions, now: number, procState: ProcessStateOf = () => undefined) {
    this.#o = o;
    this.#since = now;
    this.#procState = procState;
  }

  /** A rank's beat arrived. */
  beat(seen: RankSeen): void {
    const { rank } = seen.beat;
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.#o.world || this.#done.has(rank)) return;
    this.#seen.set(rank, seen);
    const samples = this.#samples.get(rank) ?? [];
    samples.push({ at: seen.at, step: seen.beat.step, waitMs: seen.beat.totals.waitMs });
    while (samples.length > 2 && seen.at - samples[1].at > STRAGGLER_WINDOW_MS) samples.shift();
    this.#samples.set(rank, samples);
  }

  /** Another node's agent was heard from (its beats arrived). */
  heard(node: number, at: number): void {
    this.#heard.set(node, at);
  }

  /** A rank's process exited: its failure, if it was one, is reported by its agent. */
  done(rank: number): void {
    this.#done.add(rank);
    this.#seen.delete(rank);
    this.#samples.delete(rank);
  }

  /** Another node's agent has finished. */
  nodeDone(node: number): void {
    this.#nodesDone.add(node);
    for (let r = node * this.#o.perNode; r < (node + 1) * this.#o.perNode; r++) this.done(r);
  }

  /** The first problem found at `now`, if any: a lost node, a silent rank, then a hang. */
  check(now: number): Diagnosis | undefined {
    return this.#lostNode(now) ?? this.#silentRank(now) ?? this.#hang(now);
  }

  /** A warning naming a straggler, at most once a minute per rank. */
  straggler(now: number): string | undefined {
    const perStep = new Map<number, number>();
    for (const [rank, samples] of this.#samples) {
      const first = samples[0];
      const last = samples[samples.length - 1];
      const steps = last.step - first.step;
      if (steps < STRAGGLER_MIN_STEPS) continue;
      const busy = last.at - first.at - (last.waitMs - first.waitMs);
      perStep.set(rank, Math.max(0, busy) / steps);
    }
    if (perStep.size < Math.max(2, this.#o.world)) return undefined;
    const sorted = [...perStep.values()].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    for (const [rank, ms] of perStep) {
      if (ms < STRAGGLER_FACTOR * median || ms - median < STRAGGLER_MIN_EXCESS_MS) continue;
      if (now - (this.#warned.get(rank) ?? Number.NEGATIVE_INFINITY) < STRAGGLER_REPEAT_MS) continue;
      this.#warned.set(rank, now);
      return `warning: rank ${rank} (node ${this.#node(rank)}) is a straggler: ${ms.toFixed(0)} ms per step outside collectives over the last ${s1(STRAGGLER_WINDOW_MS)}, the median rank ${median.toFixed(0)} ms (${(ms / Math.max(median, 1e-9)).toFixed(1)}×); the others wait for it`;
    }
    return undefined;
  }

  /** Every rank's row at `now`. */
  rows(now: number): RankRow[] {
    return Array.from({ length: this.#o.world }, (_, rank) => this.#row(rank, now));
  }

  /** The rank's process state in words, when it explains a silence. */
  #processState(rank: number): string | undefined {
    const letter = this.#procState(rank);
    return letter === undefined ? undefined : PROCESS_STATES[letter];
  }

  #node(rank: number): number {
    return Math.floor(rank / this.#o.perNode);
  }

  #diagnosis(now: number, d: Omit<Diagnosis, 'at' | 'ranks'>): Diagnosis {
    return { ...d, at: new Date(now).toISOString(), ranks: this.rows(now) };
  }

  #lostNode(now: number): Diagnosis | undefined {
    for (let node = 1; node < this.#o.nodes; node++) {
      if (this.#nodesDone.has(node)) continue;
      const silentMs = now - (this.#heard.get(node) ?? this.#since);
      const limit = this.#heard.has(node) ? this.#o.heartbeatTimeoutMs : FIRST_BEAT_GRACE_MS;
      if (silentMs <= limit) continue;
      const first = node * this.#o.perNode;
      return this.#diagnosis(now, {
        cause: 'lost-node',
        node,
        headline: `node ${node} is lost: no word from its agent for ${s1(silentMs)} (ranks ${first}–${first + this.#o.perNode - 1}); a network partition or a dead host`,
      });
    }
    return undefined;
  }

  #silentRank(now: number): Diagnosis | undefined {
    for (let rank = 0; rank < this.#o.world; rank++) {
      if (this.#done.has(rank)) continue;
      // Another node's ranks are heard through its agent: when the agent itself is silent, the node is the news.
      const node = this.#node(rank);
      if (node > 0 && now - (this.#heard.get(node) ?? Number.NEGATIVE_INFINITY) > STALE_BEAT_MS) continue;
      const seen = this.#seen.get(rank);
      const silentMs = now - (seen?.at ?? this.#since);
      const limit = seen ? this.#o.heartbeatTimeoutMs : FIRST_BEAT_GRACE_MS;
      if (silentMs <= limit) continue;
      const state = this.#processState(rank);
      return this.#diagnosis(now, {
        cause: 'silent-rank',
        rank,
        node: this.#node(rank),
        headline: `rank ${rank} (node ${this.#node(rank)}${seen ? `, pid ${seen.beat.pid}` : ''}) stopped responding: no heartbeat for ${s1(silentMs)}${state ? `; its process is ${state}` : ''}`,
      });
    }
    return undefined;
  }

  #hang(now: number): Diagnosis | undefined {
    let oldest: { rank: number; entry: FlightEntry; openMs: number } | undefined;
    for (const [rank, seen] of this.#seen) {
      const entry = openCall(seen.beat);
      if (!entry) continue;
      const openMs = seen.beat.t - entry.startedAt + (now - seen.at);
      if (!oldest || openMs > oldest.openMs) oldest = { rank, entry, openMs };
    }
    if (!oldest || oldest.openMs <= this.#o.hangTimeoutMs) return undefined;
    const fault = this.#fault(oldest.rank, now);
    const waiters = [...this.#seen.entries()]
      .filter(([rank, seen]) => rank !== fault.rank && openCall(seen.beat))
      .map(([rank]) => rank)
      .sort((a, b) => a - b);
    const call = describeEntry(oldest.entry);
    const who = waiters.length === 1 ? `rank ${waiters[0]} waits` : `ranks ${waiters.join(', ')} wait`;
    const headline = fault.cycle
      ? `the ranks wait on each other (${fault.cycle.join(' → ')}) with nothing in flight: they called different collectives (the oldest: ${call}, open ${s1(oldest.openMs)})`
      : `rank ${fault.rank} (node ${this.#node(fault.rank)}) ${this.#stateOf(fault.rank, now)}; ${who} for it in ${call}, open ${s1(oldest.openMs)}`;
    return this.#diagnosis(now, {
      cause: 'hang',
      rank: fault.cycle ? undefined : fault.rank,
      node: fault.cycle ? undefined : this.#node(fault.rank),
      headline,
    });
  }

  /**
   * Follows who waits on whom from `rank` to the rank that is not waiting in a call, or that cannot be (it stopped
   * beating or its event loop is blocked, whatever call its last beat shows), or round a cycle.
   */
  #fault(rank: number, now: number): { rank: number; cycle?: number[] } {
    const path = [rank];
    let at = rank;
    for (;;) {
      const seen = this.#seen.get(at);
      const entry = seen && openCall(seen.beat);
      if (!entry || now - seen.at > STALE_BEAT_MS || seen.beat.lagMs > BLOCKED_LAG_MS) return { rank: at };
      const next = entry.peer;
      if (path.includes(next)) return { rank: at, cycle: [...path.slice(path.indexOf(next)), next] };
      path.push(next);
      at = next;
    }
  }

  /** How a rank at fault is doing, in words. */
  #stateOf(rank: number, now: number): string {
    const seen = this.#seen.get(rank);
    const process = this.#processState(rank);
    if (!seen)
      return `has not reported yet${process ? `; its process is ${process}` : ': it may not have started'}`;
    const ageMs = now - seen.at;
    if (ageMs > STALE_BEAT_MS)
      return `is not responding (no heartbeat for ${s1(ageMs)}${process ? `; its process is ${process}` : ''})`;
    if (seen.beat.lagMs > BLOCKED_LAG_MS)
      return `is stuck: its event loop has not run for ${s1(seen.beat.lagMs)} (a long synchronous call)`;
    const last = seen.beat.flight.at(-1);
    return `is alive but in no collective (it last ${last ? `finished ${describeEntry(last)}` : 'called none'}; step ${seen.beat.step})`;
  }

  #row(rank: number, now: number): RankRow {
    const seen = this.#seen.get(rank);
    const node = this.#node(rank);
    if (!seen)
      return {
        rank,
        node,
        pid: undefined,
        state: 'no heartbeat yet',
        heartbeatAgeS: undefined,
        loopLagS: undefined,
        step: undefined,
        rssMiB: undefined,
        waitsOn: undefined,
        calls: [],
      };
    const { beat } = seen;
    const ageMs = now - seen.at;
    const state =
      ageMs > STALE_BEAT_MS
        ? (this.#processState(rank) ?? 'silent')
        : beat.lagMs > BLOCKED_LAG_MS
          ? 'event loop blocked'
          : openCall(beat)
            ? 'waiting'
            : 'running';
    return {
      rank,
      node,
      pid: beat.pid,
      state,
      heartbeatAgeS: round1(ageMs / 1000),
      loopLagS: round1(beat.lagMs / 1000),
      step: beat.step,
      rssMiB: Math.round(beat.rssBytes / 2 ** 20),
      waitsOn: openCall(beat)?.peer,
      calls: beat.flight.slice(-4).map((e) => describeCall(e, beat.t)),
    };
  }
}

/** The call a rank is blocked in: its newest, if still open. */
function openCall(beat: Beat): FlightEntry | undefined {
  const last = beat.flight.at(-1);
  return last?.state === 'started' ? last : undefined;
}

function describeCall(e: FlightEntry, t: number): string {
  const name = describeEntry(e);
  return e.state === 'started'
    ? `${name} started ${s1(t - e.startedAt)} ago, waits on rank ${e.peer}`
    : `${name} ${e.state} in ${((e.endedAt ?? e.startedAt) - e.startedAt).toFixed(0)} ms`;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** The diagnosis as the table the launcher prints under the headline. */
export function formatDiagnosis(d: Diagnosis): string {
  const header = [
    'rank',
    'node',
    'pid',
    'state',
    'heartbeat',
    'loop lag',
    'step',
    'RSS',
    'waits on',
    'last calls',
  ];
  const rows = d.ranks.map((r) => [
    String(r.rank),
    String(r.node),
    r.pid === undefined ? '-' : String(r.pid),
    r.state,
    r.heartbeatAgeS === undefined ? '-' : `${r.heartbeatAgeS} s ago`,
    r.loopLagS === undefined ? '-' : `${r.loopLagS} s`,
    r.step === undefined ? '-' : String(r.step),
    r.rssMiB === undefined ? '-' : `${r.rssMiB} MiB`,
    r.waitsOn === undefined ? '-' : `rank ${r.waitsOn}`,
    r.calls.at(-1) ?? '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
