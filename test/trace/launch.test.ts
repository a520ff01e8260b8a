import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { LaunchEvent } from '../../launcher/events.ts';
import { launch } from '../../launcher/launch.ts';
import { type ChromeTrace, type CompleteEvent, chromeTraceProblems } from '../../src/trace/chrome-trace.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/traced.worker.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'kd-trace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a traced job over 2 real worker processes', () => {
  it('writes one valid Chrome trace with a lane per rank, aligned across ranks', async () => {
    const path = join(dir, 'out', 'trace.json');
    const handle = launch(
      { name: 'trace-check', script: SCRIPT, args: { steps: 3 } },
      { nproc: 2, trace: { path } },
    );
    const events: LaunchEvent[] = [];
    for await (const e of handle.events) events.push(e);
    const { reports } = await handle.result;

    // The trace travels beside the program's reports, not among them.
    expect(reports.map((r) => r.data)).toEqual(
      expect.arrayContaining([
        { rank: 0, spans: 21, enabled: true },
        { rank: 1, spans: 21, enabled: true },
      ]),
    );
    expect(reports).toHaveLength(2);
    expect(events.find((e) => e.type === 'trace')).toEqual({
      type: 'trace',
      path,
      ranks: 2,
      world: 2,
      spans: 42,
    });

    const trace = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
    expect(chromeTraceProblems(trace, { ranks: [0, 1] })).toEqual([]);
    const x = trace.traceEvents.filter((e): e is CompleteEvent => e.ph === 'X');
    for (const rank of [0, 1]) {
      const names = x.filter((e) => e.tid === rank).map((e) => e.name);
      expect(names.filter((n) => n === 'forward')).toHaveLength(6);
      expect(names.filter((n) => n === 'step')).toHaveLength(3);
    }
    expect(x.find((e) => e.name === 'backward')?.args).toMatchObject({ micro: 0, step: 0 });

    // An all-reduce cannot finish on one rank before the other has entered it: on a common clock, the two ranks'
    // spans of the same all-reduce overlap.
    const allreduce = (rank: number) => x.filter((e) => e.tid === rank && e.name === 'allreduce');
    for (let step = 0; step < 3; step++) {
      const [a, b] = [allreduce(0)[step], allreduce(1)[step]];
      expect(a.ts, `step ${step}`).toBeLessThan(b.ts + b.dur);
      expect(b.ts, `step ${step}`).toBeLessThan(a.ts + a.dur);
    }
  });

  it('records nothing and writes no trace when tracing is off', async () => {
    const handle = launch({ name: 'untraced', script: SCRIPT, args: { steps: 1 } }, { nproc: 2 });
    const types: string[] = [];
    for await (const e of handle.events) types.push(e.type);
    const { reports } = await handle.result;
    expect(types).not.toContain('trace');
    expect(reports.map((r) => r.data)).toEqual(
      expect.arrayContaining([
        { rank: 0, spans: 0, enabled: false },
        { rank: 1, spans: 0, enabled: false },
      ]),
    );
  });
});
