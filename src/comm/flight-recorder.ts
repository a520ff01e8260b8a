/**
 * A rank's flight recorder (as NCCL's): its last collectives and point-to-point calls, each with the peer it waits
 * on, so that when a job hangs the launcher can say who waits on whom. Cheap enough to be always on: one small
 * object per call, kept in a short list that a reader copies when it wants to (the worker's pulse, every 100 ms).
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

/** Calls a recorder keeps: enough to show what led up to a hang without making a heartbeat large. */
export const FLIGHT_KEPT = 8;

export class FlightRecorder {
  readonly #totals: FlightTotals = { completed: 0, waitMs: 0 };
  /** The last `FLIGHT_KEPT` calls, oldest first; `end` updates an entry in place. */
  readonly #recent: FlightEntry[] = [];
  #open = 0;
  #openSince = 0;
  /** Grows with every start and end: a reader that saw this count has seen everything since. */
  changes = 0;

  begin(op: string, group: string, seq: number, peer: number): FlightEntry {
    const entry: FlightEntry = { op, group, seq, bytes: 0, state: 'started', peer, startedAt: Date.now() };
    if (this.#open++ === 0) this.#openSince = entry.startedAt;
    this.#recent.push(entry);
    if (this.#recent.length > FLIGHT_KEPT) this.#recent.shift();
    this.changes++;
    return entry;
  }

  end(entry: FlightEntry, ok: boolean): void {
    entry.state = ok ? 'completed' : 'failed';
    entry.endedAt = Date.now();
    this.#totals.completed++;
    if (--this.#open === 0) this.#totals.waitMs += entry.endedAt - this.#openSince;
    this.changes++;
  }

  /** The last calls, oldest first, and the totals (the live objects: copy them to keep them). */
  snapshot(): { flight: readonly FlightEntry[]; totals: FlightTotals } {
    return { flight: this.#recent, totals: this.#totals };
  }
}

/** `allReduce #12 (group world)`: how errors, logs and the launcher's tables name a call. */
export function describeEntry(e: Pick<FlightEntry, 'op' | 'seq' | 'group'>): string {
  return `${e.op} #${e.seq} (group ${e.group})`;
}
