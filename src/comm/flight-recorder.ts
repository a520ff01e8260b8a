/**
 * A rank's flight recorder (as NCCL's): its last collectives and point-to-point calls, each with the peer it waits
 * on, so that when a job hangs the launcher can say who waits on whom. Cheap enough to be always on: one small
 * object per call, handed to `onChange` as it starts and ends (the worker's pulse keeps the last few).
 */

export type FlightState = 'started' | 'completed' | 'failed';

export interface FlightEntry {
  op: string;
  group: string;
  seq: number;
  /** Payload bytes this rank sent in the call so far. */
  bytes: number;
  state: FlightState;
  /** The world rank this call receives from (a ring's left neighbour, a recv's source, a send's target). */
  peer: number;
  /** Wall-clock times (ms since the epoch): the launcher compares them across ranks of one host. */
  startedAt: number;
  endedAt?: number;
}

/** Counters a straggler shows in: a slow rank spends the least time waiting in collectives. */
export interface FlightTotals {
  completed: number;
  /** Milliseconds with at least one call open (overlapping calls count once). */
  waitMs: number;
}

export class FlightRecorder {
  readonly #totals: FlightTotals = { completed: 0, waitMs: 0 };
  #open = 0;
  #openSince = 0;

  constructor(
    /** Told of every start and end, e.g. to pass them to the heartbeat thread. */
    private readonly onChange?: (entry: FlightEntry, totals: FlightTotals) => void,
  ) {}

  begin(op: string, group: string, seq: number, peer: number): FlightEntry {
    const entry: FlightEntry = { op, group, seq, bytes: 0, state: 'started', peer, startedAt: Date.now() };
    if (this.#open++ === 0) this.#openSince = entry.startedAt;
    this.onChange?.(entry, this.#totals);
    return entry;
  }

  end(entry: FlightEntry, ok: boolean): void {
    entry.state = ok ? 'completed' : 'failed';
    entry.endedAt = Date.now();
    this.#totals.completed++;
    if (--this.#open === 0) this.#totals.waitMs += entry.endedAt - this.#openSince;
    this.onChange?.(entry, this.#totals);
  }
}

/** `allReduce #12 (group world)`: how errors, logs and the launcher's tables name a call. */
export function describeEntry(e: Pick<FlightEntry, 'op' | 'seq' | 'group'>): string {
  return `${e.op} #${e.seq} (group ${e.group})`;
}
