import { describe, expect, it } from 'vitest';
import { meanIdle, utilisation } from '../../src/trace/bubble.ts';
import type { RankTrace, Span } from '../../src/trace/timeline.ts';

const s = (cat: string, start: number, end: number, step?: number): Span => ({
  name: cat,
  cat,
  start,
  end,
  ...(step !== undefined ? { step } : {}),
});

describe('utilisation', () => {
  it('counts compute spans as busy over the common window, nested spans once', () => {
    const traces: RankTrace[] = [
      // Window is [0, 10] (rank 1's last span ends at 10). Busy: forward 0–2, backward 4–8 with a nested optimizer.
      {
        rank: 0,
        epochWallMs: 0,
        spans: [s('forward', 0, 2), s('recv', 2, 4), s('backward', 4, 8), s('optimizer', 5, 6)],
      },
      // Epoch 1 ms later: its spans sit at 1–5 and 5–10 on the common base.
      { rank: 1, epochWallMs: 1, spans: [s('wait', 0, 4), s('forward', 4, 9)] },
    ];
    const u = utilisation(traces);
    expect(u.map((x) => x.rank)).toEqual([0, 1]);
    expect(u[0]).toMatchObject({ busyMs: 6, idleMs: 4, busy: 0.6 });
    expect(u[0].idle).toBeCloseTo(0.4, 12);
    expect(u[1]).toMatchObject({ busyMs: 5, idleMs: 5, busy: 0.5, idle: 0.5 });
    expect(meanIdle(u)).toBeCloseTo(0.45, 12);
    expect(meanIdle(u, [1])).toBeCloseTo(0.5, 12);
  });

  it('clips to an explicit window and takes a custom notion of busy', () => {
    const traces: RankTrace[] = [
      { rank: 0, epochWallMs: 0, spans: [s('forward', 0, 4), s('allreduce', 4, 6)] },
    ];
    expect(utilisation(traces, { window: { start: 2, end: 6 } })[0]).toMatchObject({ busyMs: 2, busy: 0.5 });
    const withComm = utilisation(traces, { busy: (x) => x.cat !== 'wait' });
    expect(withComm[0]).toMatchObject({ busyMs: 6, busy: 1, idle: 0 });
  });

  it('measures one step by filtering on its spans', () => {
    const traces: RankTrace[] = [
      {
        rank: 0,
        epochWallMs: 0,
        spans: [s('forward', 0, 1, 0), s('forward', 10, 11, 1), s('backward', 13, 14, 1)],
      },
      { rank: 1, epochWallMs: 0, spans: [s('forward', 1, 2, 0), s('forward', 11, 13, 1)] },
    ];
    const u = utilisation(traces, { include: (x) => x.step === 1 });
    // Step 1 spans [10, 14]: rank 0 busy 2 of 4, rank 1 busy 2 of 4.
    expect(u.map((x) => x.busy)).toEqual([0.5, 0.5]);
  });

  it('reads an empty trace as neither busy nor idle', () => {
    expect(utilisation([{ rank: 0, epochWallMs: 0, spans: [] }])).toEqual([
      { rank: 0, busyMs: 0, idleMs: 0, busy: 0, idle: 0 },
    ]);
  });
});
