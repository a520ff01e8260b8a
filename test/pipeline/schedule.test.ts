import { describe, expect, it } from 'vitest';
import {
  computeOrder,
  DeadlockError,
  describeOrder,
  idealBubble,
  peakLiveActivations,
  ScheduleError,
  type ScheduleName,
  type StageOp,
  schedulePrograms,
  simulate,
  stageProgram,
  type Transfer,
  transferTag,
} from '../../src/pipeline/schedule.ts';
import { type RankTrace, utilisation } from '../../src/trace/index.ts';

const orders = (schedule: ScheduleName, P: number, M: number) =>
  Array.from({ length: P }, (_, s) => describeOrder(computeOrder(schedule, P, M, s)));

describe('compute order', () => {
  it('GPipe: every forward, then every backward, on every stage', () => {
    expect(orders('gpipe', 2, 3)).toEqual(['F0 F1 F2 B0 B1 B2', 'F0 F1 F2 B0 B1 B2']);
    expect(orders('gpipe', 3, 1)).toEqual(['F0 B0', 'F0 B0', 'F0 B0']);
  });

  it('1F1B: P−s−1 warm-up forwards, one forward one backward, then the cool-down', () => {
    expect(orders('1f1b', 3, 4)).toEqual([
      'F0 F1 F2 B0 F3 B1 B2 B3',
      'F0 F1 B0 F2 B1 F3 B2 B3',
      'F0 B0 F1 B1 F2 B2 F3 B3',
    ]);
    expect(orders('1f1b', 2, 3)).toEqual(['F0 F1 B0 F2 B1 B2', 'F0 B0 F1 B1 F2 B2']);
  });

  it('1F1B with fewer micro-batches than stages warms up with all of them', () => {
    expect(orders('1f1b', 4, 2)).toEqual(['F0 F1 B0 B1', 'F0 F1 B0 B1', 'F0 F1 B0 B1', 'F0 B0 F1 B1']);
  });

  it('one stage has no transfers at all', () => {
    expect(stageProgram('1f1b', 1, 3, 0).every((op) => op.kind !== 'comm')).toBe(true);
  });

  it('rejects impossible shapes', () => {
    expect(() => computeOrder('gpipe', 0, 4, 0)).toThrow(/stages must be a positive integer/);
    expect(() => computeOrder('gpipe', 2, 0, 0)).toThrow(/micro-batches/);
    expect(() => computeOrder('1f1b', 2, 4, 2)).toThrow(/stage 2 is outside 0..1/);
  });
});

describe('stage programs', () => {
  const act = (micro: number, peer: number): Transfer => ({ what: 'activation', micro, peer });
  const grad = (micro: number, peer: number): Transfer => ({ what: 'gradient', micro, peer });

  it('fuse the send of one compute with the receive of the next (1F1B, P = 2, M = 2)', () => {
    const f = (micro: number): StageOp => ({ kind: 'forward', micro });
    const b = (micro: number): StageOp => ({ kind: 'backward', micro });
    const comm = (sends: Transfer[], recvs: Transfer[]): StageOp => ({ kind: 'comm', sends, recvs });
    expect(stageProgram('1f1b', 2, 2, 0)).toEqual([
      f(0),
      comm([act(0, 1)], []),
      f(1),
      comm([act(1, 1)], [grad(0, 1)]),
      b(0),
      comm([], [grad(1, 1)]),
      b(1),
    ]);
    expect(stageProgram('1f1b', 2, 2, 1)).toEqual([
      comm([], [act(0, 0)]),
      f(0),
      b(0),
      comm([grad(0, 0)], [act(1, 0)]),
      f(1),
      b(1),
      comm([grad(1, 0)], []),
    ]);
  });

  it('give every transfer a tag of its own', () => {
    const tags = new Set<number>();
    for (let m = 0; m < 8; m++)
      for (const what of ['activation', 'gradient'] as const) tags.add(transferTag({ what, micro: m }));
    expect(tags.size).toBe(16);
  });
});

describe('simulated with blocking send/recv and equal stage times', () => {
  const shapes = [1, 2, 3, 4, 5].flatMap((P) => [1, 2, 3, 4, 8, 9].map((M) => [P, M] as const));

  for (const semantics of ['rendezvous', 'buffered'] as const) {
    it(`never deadlock, and every stage idles (P−1)/(M+P−1) (${semantics})`, () => {
      for (const schedule of ['gpipe', '1f1b'] as const) {
        for (const [P, M] of shapes) {
          for (const [f, b] of [
            [1, 1],
            [1, 2],
          ]) {
            const r = simulate(schedulePrograms(schedule, P, M), {
              forwardTime: f,
              backwardTime: b,
              semantics,
            });
            const where = `${schedule} P=${P} M=${M} f=${f} b=${b}`;
            expect(r.makespan, where).toBe((M + P - 1) * (f + b));
            for (const st of r.stages)
              expect(st.idle, `${where} stage ${st.stage}`).toBeCloseTo(idealBubble(P, M), 12);
            expect(r.bubble, where).toBeCloseTo(idealBubble(P, M), 12);
          }
        }
      }
    });
  }

  it('with times per stage, wait on the slower stage in each phase: the bubble grows past (P−1)/(M+P−1)', () => {
    // Stage 0 forwards slower, stage 1 backwards slower (an MLP cut after its first layer, as bench/pipeline.ts).
    const [F, B, M] = [[12, 7], [16, 23], 4];
    const r = simulate(schedulePrograms('gpipe', 2, M), {
      forwardTime: F,
      backwardTime: B,
      semantics: 'buffered',
    });
    expect(r.makespan).toBe(F[0] + (M - 1) * 12 + F[1] + B[1] + (M - 1) * 23 + B[0]);
    expect(r.stages.map((st) => st.busy)).toEqual([M * (F[0] + B[0]), M * (F[1] + B[1])]);
    expect(r.bubble).toBeGreaterThan(idealBubble(2, M) + 0.05);
  });

  it('hold M live activations per stage under GPipe, at most P (P − s) under 1F1B', () => {
    for (const [P, M] of shapes) {
      const gpipe = simulate(schedulePrograms('gpipe', P, M));
      const ofb = simulate(schedulePrograms('1f1b', P, M));
      for (let s = 0; s < P; s++) {
        expect(gpipe.stages[s].peakLiveActivations).toBe(M);
        expect(ofb.stages[s].peakLiveActivations).toBe(Math.min(P - s, M));
        expect(ofb.stages[s].peakLiveActivations).toBeLessThanOrEqual(P);
      }
    }
    expect(peakLiveActivations(computeOrder('1f1b', 4, 8, 0))).toBe(4);
    expect(peakLiveActivations(computeOrder('gpipe', 4, 8, 3))).toBe(8);
  });

  it('idealBubble is (P−1)/(M+P−1)', () => {
    expect(idealBubble(1, 8)).toBe(0);
    expect(idealBubble(2, 4)).toBeCloseTo(1 / 5, 15);
    expect(idealBubble(2, 8)).toBeCloseTo(1 / 9, 15);
    expect(idealBubble(4, 8)).toBeCloseTo(3 / 11, 15);
  });

  it('give the timeline the same bubble when its spans are measured like a real run', () => {
    const P = 2;
    const M = 4;
    const r = simulate(schedulePrograms('gpipe', P, M));
    const traces: RankTrace[] = r.stages.map((st) => ({
      rank: st.stage,
      epochWallMs: 0,
      spans: st.spans.map((x) => ({
        name: x.kind,
        cat: x.kind === 'comm' ? 'wait' : x.kind,
        start: x.start,
        end: x.end,
        ...(x.micro !== undefined ? { micro: x.micro } : {}),
      })),
    }));
    for (const u of utilisation(traces)) expect(u.idle).toBeCloseTo(idealBubble(P, M), 12);
  });

  it('catch the deadlock of unfused sends: each neighbour sends first and waits for the other', () => {
    // 1F1B for P = 2, M = 2 with every transfer its own blocking op: stage 0 sends activation 1 while stage 1
    // sends gradient 0, and neither posts the receive the other waits for.
    const t = (what: 'activation' | 'gradient', micro: number, peer: number) => ({ what, micro, peer });
    const send = (x: ReturnType<typeof t>): StageOp => ({ kind: 'comm', sends: [x], recvs: [] });
    const recv = (x: ReturnType<typeof t>): StageOp => ({ kind: 'comm', sends: [], recvs: [x] });
    const F = (micro: number): StageOp => ({ kind: 'forward', micro });
    const B = (micro: number): StageOp => ({ kind: 'backward', micro });
    const programs: StageOp[][] = [
      [
        F(0),
        send(t('activation', 0, 1)),
        F(1),
        send(t('activation', 1, 1)),
        recv(t('gradient', 0, 1)),
        B(0),
        recv(t('gradient', 1, 1)),
        B(1),
      ],
      [
        recv(t('activation', 0, 0)),
        F(0),
        B(0),
        send(t('gradient', 0, 0)),
        recv(t('activation', 1, 0)),
        F(1),
        B(1),
        send(t('gradient', 1, 0)),
      ],
    ];
    expect(() => simulate(programs)).toThrow(DeadlockError);
    expect(() => simulate(programs)).toThrow(
      /stage 0 waits in comm\(send activation 1 1\); stage 1 waits in comm\(send gradient 0 0\)/,
    );
    // With buffered sends the same programs finish.
    expect(simulate(programs, { semantics: 'buffered' }).makespan).toBeGreaterThan(0);
  });

  it('reject a program that computes without its inputs or drops a backward', () => {
    const F = (micro: number): StageOp => ({ kind: 'forward', micro });
    const B = (micro: number): StageOp => ({ kind: 'backward', micro });
    expect(() =>
      simulate([
        [F(0), B(0)],
        [F(0), B(0)],
      ]),
    ).toThrow(ScheduleError);
    expect(() => simulate([[B(0)]])).toThrow(/backward 0 before its forward/);
    expect(() => simulate([[F(0), F(1), B(0)]])).toThrow(/never runs the backward of micro-batch\(es\) 1/);
  });
});
