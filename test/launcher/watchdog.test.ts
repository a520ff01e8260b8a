/**
 * The watchdog and the flight recorder, on real workers: a rank stopped with SIGSTOP, a rank whose event loop is
 * blocked, a straggler. Each ends (or warns) within seconds, naming the rank at fault and the call the others
 * wait in; the flight recorder's JSON lands in the run directory. And the analysis itself, on made-up beats.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import type { LaunchEvent } from '../../launcher/events.ts';
import { launch } from '../../launcher/launch.ts';
import type { Beat } from '../../launcher/pulse.ts';
import { type Diagnosis, formatDiagnosis, Watchdog } from '../../launcher/watchdog.ts';
import type { FlightEntry } from '../../src/comm/flight-recorder.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-watchdog-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs a job to its end, collecting events; `onEvent` may act on them (stop a worker). */
async function runJob(
  job: Record<string, unknown>,
  options: Parameters<typeof launch>[1],
  onEvent: (e: LaunchEvent, pids: Map<number, number>) => void = () => {},
): Promise<{ events: LaunchEvent[]; error: unknown; endedAt: number }> {
  const handle = launch(job, options);
  const events: LaunchEvent[] = [];
  const pids = new Map<number, number>();
  for await (const e of handle.events) {
    events.push(e);
    if (e.type === 'worker-started') pids.set(e.rank, e.pid);
    onEvent(e, pids);
  }
  const error = await handle.result.then(
    () => undefined,
    (x: unknown) => x,
  );
  return { events, error, endedAt: Date.now() };
}

const diagnosisOf = (events: LaunchEvent[]) =>
  events.flatMap((e) => (e.type === 'diagnosis' ? [e] : []))[0] as
    | Extract<LaunchEvent, { type: 'diagnosis' }>
    | undefined;

describe('the watchdog on real workers', () => {
  it('SIGSTOP of one rank of 3 with --hang-timeout 5: ends within 15 s naming that rank and the call the others wait in', async () => {
    const runDir = join(tmp, 'stopped');
    let stoppedAt = 0;
    let stoppedPid = 0;
    const { events, error, endedAt } = await runJob(
      { name: 'stopped', script: fixture('busy.worker.ts') },
      { nproc: 3, hangTimeoutS: 5, runDir },
      (e, pids) => {
        // Stopped a second into its run, as an operator's SIGSTOP would find it: heartbeats already flowing.
        if (e.type === 'report' && e.rank === 1 && !stoppedPid) {
          stoppedPid = pids.get(1) as number;
          setTimeout(() => {
            process.kill(stoppedPid, 'SIGSTOP');
            stoppedAt = Date.now();
          }, 1000);
        }
      },
    );
    expect(stoppedAt).toBeGreaterThan(0);
    expect(endedAt - stoppedAt).toBeLessThan(15_000);
    expect(error).toBeInstanceOf(JobFailedError);
    const d = diagnosisOf(events);
    expect(d?.diagnosis.cause).toBe('hang');
    expect(d?.diagnosis.rank).toBe(1);
    expect(d?.diagnosis.headline).toMatch(
      /^rank 1 \(node 0\) is not responding \(no heartbeat for [\d.]+ s; its process is stopped by a signal \(SIGSTOP\?\)\); ranks? [02](, [02])? waits? for it in allReduce #\d+ \(group world\)/,
    );
    expect((error as Error).message).toBe(d?.diagnosis.headline);
    // The flight recorder of every rank, in the run directory.
    const json = JSON.parse(readFileSync(join(runDir, 'flight-recorder.json'), 'utf8')) as Diagnosis;
    expect(json.ranks.map((r) => r.rank)).toEqual([0, 1, 2]);
    expect(json.ranks[1].state).toMatch(/stopped/);
    expect(json.ranks[0].calls.at(-1)).toMatch(/^allReduce #\d+ \(group world\) started/);
    expect(formatDiagnosis(json)).toMatch(/^rank +node +pid +state/);
  });

  it('a rank whose event loop is blocked: the others wait in the barrier, the headline says the loop has not run', async () => {
    const { events, error } = await runJob(
      { name: 'blocked', script: fixture('blocking.worker.ts'), args: { block_rank: 1, block_ms: 60_000 } },
      { nproc: 2, hangTimeoutS: 4, runDir: join(tmp, 'blocked') },
    );
    expect(error).toBeInstanceOf(JobFailedError);
    expect(diagnosisOf(events)?.diagnosis.headline).toMatch(
      /^rank 1 \(node 0\) is stuck: its event loop has not run for [\d.]+ s \(a long synchronous call\); rank 0 waits for it in barrier #\d+ \(group world\)/,
    );
  });

  it('a silent rank past --heartbeat-timeout is named with its process state', async () => {
    const { events, error } = await runJob(
      { name: 'silent', script: fixture('busy.worker.ts') },
      { nproc: 2, heartbeatTimeoutS: 3, hangTimeoutS: 600, runDir: join(tmp, 'silent') },
      (e, pids) => {
        if (e.type === 'report' && e.rank === 0) process.kill(pids.get(0) as number, 'SIGSTOP');
      },
    );
    expect(error).toBeInstanceOf(JobFailedError);
    expect(diagnosisOf(events)?.diagnosis.headline).toMatch(
      /^rank 0 \(node 0, pid \d+\) stopped responding: no heartbeat for [\d.]+ s; its process is stopped by a signal/,
    );
  });

  it('a straggler (a rank stopped 90 % of the time) is named in a warning while the job goes on', async () => {
    let cycle: NodeJS.Timeout | undefined;
    const handle = launch(
      { name: 'straggler', script: fixture('steps.worker.ts'), args: { compute_ms: 20 } },
      { nproc: 2, runDir: join(tmp, 'straggler') },
    );
    const pids = new Map<number, number>();
    let warning = '';
    for await (const e of handle.events) {
      if (e.type === 'worker-started') pids.set(e.rank, e.pid);
      if (e.type === 'report' && e.rank === 1 && !cycle) {
        const pid = pids.get(1) as number;
        // 90 % stopped: 180 ms stopped, 20 ms running, as a CPU quota would.
        const tick = () => {
          process.kill(pid, 'SIGSTOP');
          cycle = setTimeout(() => {
            process.kill(pid, 'SIGCONT');
            cycle = setTimeout(tick, 20);
          }, 180);
        };
        tick();
      }
      if (e.type === 'warning' && /straggler/.test(e.message)) {
        warning = e.message;
        clearTimeout(cycle);
        process.kill(pids.get(1) as number, 'SIGCONT');
        handle.abort('the test saw the warning');
      }
    }
    await handle.result.catch(() => {});
    clearTimeout(cycle);
    expect(warning).toMatch(
      /^warning: rank 1 \(node 0\) is a straggler: \d+ ms per step outside collectives over the last 10\.0 s, the median rank \d+ ms/,
    );
  }, 60_000);
});

describe('the watchdog’s analysis', () => {
  const call = (
    op: string,
    seq: number,
    peer: number,
    state: FlightEntry['state'],
    at: number,
  ): FlightEntry => ({
    op,
    group: 'world',
    seq,
    bytes: 0,
    state,
    peer,
    startedAt: at,
    endedAt: state === 'started' ? undefined : at + 1,
  });
  const beat = (rank: number, t: number, flight: FlightEntry[], lagMs = 0): Beat => ({
    rank,
    pid: 1000 + rank,
    t,
    lagMs,
    rssBytes: 2 ** 27,
    step: 7,
    totals: { completed: 10, waitMs: 100 },
    flight,
  });
  const options = { world: 4, perNode: 2, nodes: 2, heartbeatTimeoutMs: 10_000, hangTimeoutMs: 5_000 };

  it('follows who waits on whom to the rank in no call', () => {
    const w = new Watchdog(options, 0);
    // A ring: rank r receives from r-1. Rank 1 finished #41 and never entered #42.
    for (const r of [0, 2, 3])
      w.beat({ beat: beat(r, 7000, [call('allReduce', 42, (r + 3) % 4, 'started', 1000)]), at: 7000 });
    w.beat({ beat: beat(1, 7000, [call('allReduce', 41, 0, 'completed', 900)]), at: 7000 });
    w.heard(1, 7000);
    const d = w.check(7000);
    expect(d?.cause).toBe('hang');
    expect(d?.rank).toBe(1);
    expect(d?.headline).toBe(
      'rank 1 (node 0) is alive but in no collective (it last finished allReduce #41 (group world); step 7); ranks 0, 2, 3 wait for it in allReduce #42 (group world), open 6.0 s',
    );
  });

  it('a rank that stopped beating inside a call is the one at fault, not a cycle through it', () => {
    const w = new Watchdog({ ...options, world: 3, nodes: 1, perNode: 3 }, 0, (r) => (r === 1 ? 'T' : 'S'));
    for (const r of [0, 2])
      w.beat({ beat: beat(r, 7000, [call('allReduce', 9, (r + 2) % 3, 'started', 1000)]), at: 7000 });
    w.beat({ beat: beat(1, 1000, [call('allReduce', 9, 0, 'started', 1000)]), at: 1000 });
    const d = w.check(7000);
    expect(d?.rank).toBe(1);
    expect(d?.headline).toMatch(
      /^rank 1 \(node 0\) is not responding \(no heartbeat for 6\.0 s; its process is stopped/,
    );
  });

  it('ranks waiting on each other with nothing in flight: a mismatch, not one rank', () => {
    const w = new Watchdog({ ...options, world: 2, nodes: 1 }, 0);
    w.beat({ beat: beat(0, 7000, [call('allReduce', 3, 1, 'started', 1000)]), at: 7000 });
    w.beat({ beat: beat(1, 7000, [call('broadcast', 3, 0, 'started', 1000)]), at: 7000 });
    const d = w.check(7000);
    expect(d?.rank).toBeUndefined();
    expect(d?.headline).toMatch(/^the ranks wait on each other \(0 → 1 → 0\)/);
  });

  it('a node whose agent falls silent is lost; one that finished is not', () => {
    const w = new Watchdog(options, 0);
    w.heard(1, 1000);
    expect(w.check(10_500)).toBeUndefined();
    expect(w.check(11_500)?.headline).toMatch(
      /^node 1 is lost: no word from its agent for 10\.5 s \(ranks 2–3\); a network partition or a dead host/,
    );
    w.nodeDone(1);
    for (const r of [0, 1]) w.done(r);
    expect(w.check(60_000)).toBeUndefined();
  });

  it('names the silent rank with its process state', () => {
    const w = new Watchdog({ ...options, nodes: 1, world: 2 }, 0, (r) => (r === 1 ? 'T' : 'S'));
    w.beat({ beat: beat(0, 1000, []), at: 20_000 });
    w.beat({ beat: beat(1, 1000, []), at: 1000 });
    expect(w.check(12_000)?.headline).toBe(
      'rank 1 (node 0, pid 1001) stopped responding: no heartbeat for 11.0 s; its process is stopped by a signal (SIGSTOP?)',
    );
  });
});

it('no flight recorder is written when nothing goes wrong', async () => {
  const runDir = join(tmp, 'fine');
  const { error } = await runJob(
    { name: 'fine', script: fixture('blocking.worker.ts'), args: { block_ms: 100 } },
    { nproc: 2, runDir },
  );
  expect(error).toBeUndefined();
  expect(existsSync(join(runDir, 'metrics.jsonl'))).toBe(true);
  expect(existsSync(join(runDir, 'flight-recorder.json'))).toBe(false);
});
