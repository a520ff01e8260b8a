/**
 * A worker's pulse: a heartbeat to its agent from a thread of its own, so that it keeps beating while the worker's
 * event loop is blocked (a long synchronous step, a stuck file system call) and says so — the main thread stamps a
 * shared clock every 100 ms, and the beat carries how late that stamp is. A stopped process (SIGSTOP) or a dead
 * one stops beating altogether. Each beat also carries the flight recorder's last calls and totals, which the main
 * thread hands over with its stamp when they changed: a message to a thread per call cost more than a small
 * collective itself, and a blocked main thread changes no call.
 */
import { Worker } from 'node:worker_threads';
import { type FlightEntry, FlightRecorder, type FlightTotals } from '../src/comm/flight-recorder.ts';

/** One heartbeat, a JSON line on the worker's fd 3. */
export interface Beat {
  rank: number;
  pid: number;
  /** Wall-clock time of the beat (ms since the epoch). */
  t: number;
  /** How long the worker's event loop has not run (ms): 0–100 when healthy. */
  lagMs: number;
  rssBytes: number;
  step: number;
  totals: FlightTotals;
  /** The last calls, oldest first. */
  flight: FlightEntry[];
}

export const BEAT_MS = 250;
const TICK_MS = 100;

/** Messages from the main thread to the pulse thread. */
type ToThread =
  | { kind: 'state'; flight: readonly FlightEntry[]; totals: FlightTotals; step: number }
  | { kind: 'stop' };

/**
 * The thread's whole program. It runs as an `eval` worker (plain JavaScript from this function's text: a worker
 * thread does not inherit the TypeScript loader the launcher may run under), so it uses nothing from outside its
 * body and declares no named inner functions (the loader would wrap them in a helper the thread does not have).
 */
function pulseThread(): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { write } = require('node:fs') as typeof import('node:fs');
  const { fd, rank, beatMs, clock } = workerData as {
    fd: number;
    rank: number;
    beatMs: number;
    clock: SharedArrayBuffer;
  };
  const tick = new Float64Array(clock);
  let state: { flight: readonly FlightEntry[]; totals: FlightTotals; step: number } = {
    flight: [],
    totals: { completed: 0, waitMs: 0 },
    step: 0,
  };
  let writing = false;
  parentPort?.on('message', (m: ToThread) => {
    if (m.kind === 'stop') process.exit(0);
    state = m;
  });
  // The first beat at once, then one every beatMs (an emitter, not a named function: see above).
  const clockwork = new (require('node:events') as typeof import('node:events')).EventEmitter();
  clockwork.on('beat', () => {
    // A beat still being written means the agent is not reading: drop this one rather than queue them up.
    if (writing) return;
    const t = Date.now();
    const beat = {
      rank,
      pid: process.pid,
      t,
      lagMs: Math.max(0, t - tick[0]),
      rssBytes: process.memoryUsage.rss(),
      step: state.step,
      totals: state.totals,
      flight: state.flight,
    };
    writing = true;
    write(fd, `${JSON.stringify(beat)}\n`, () => {
      writing = false;
    });
  });
  clockwork.emit('beat');
  setInterval(() => clockwork.emit('beat'), beatMs);
}

/** Starts the pulse on `fd` (the pipe the agent gave the worker) and returns the recorder it reports. */
export function startPulse(
  fd: number,
  rank: number,
): { recorder: FlightRecorder; step(step: number): void; stop(): void } {
  const clock = new SharedArrayBuffer(8);
  const tick = new Float64Array(clock);
  const recorder = new FlightRecorder();
  const thread = new Worker(`(${pulseThread.toString()})()`, {
    eval: true,
    workerData: { fd, rank, beatMs: BEAT_MS, clock },
  });
  thread.unref();
  const post = (m: ToThread) => thread.postMessage(m);
  let step = 0;
  let posted = { changes: -1, step: -1 };
  const stampAndHandOver = () => {
    tick[0] = Date.now();
    if (recorder.changes === posted.changes && step === posted.step) return;
    posted = { changes: recorder.changes, step };
    post({ kind: 'state', ...recorder.snapshot(), step });
  };
  stampAndHandOver();
  const stamp = setInterval(stampAndHandOver, TICK_MS);
  stamp.unref();
  return {
    recorder,
    step: (s) => {
      step = s;
    },
    stop: () => {
      clearInterval(stamp);
      post({ kind: 'stop' });
    },
  };
}
