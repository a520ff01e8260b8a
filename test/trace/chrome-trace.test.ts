import { describe, expect, it } from 'vitest';
import { alignTraces, extent } from '../../src/trace/align.ts';
import { type CompleteEvent, chromeTraceProblems, toChromeTrace } from '../../src/trace/chrome-trace.ts';
import type { RankTrace, Span } from '../../src/trace/timeline.ts';
import { isTraceChunk, TraceCollector, traceChunks } from '../../src/trace/wire.ts';

const span = (name: string, cat: string, start: number, end: number, micro?: number): Span => ({
  name,
  cat,
  start,
  end,
  ...(micro !== undefined ? { micro } : {}),
});

/** Two ranks whose epochs differ by 2.5 ms: rank 1 started its clock later. */
const traces: RankTrace[] = [
  {
    rank: 1,
    epochWallMs: 1_000_002.5,
    spans: [
      span('forward', 'forward', 0, 1, 0),
      span('step', 'step', 0, 4),
      span('backward', 'backward', 1, 3, 0),
    ],
  },
  {
    rank: 0,
    epochWallMs: 1_000_000,
    spans: [span('forward', 'forward', 0.1, 1.1, 0), span('send', 'send', 1.1, 1.3, 0)],
  },
];

describe('alignTraces', () => {
  it('puts every rank on the earliest epoch', () => {
    const a = alignTraces(traces);
    expect(a.originWallMs).toBe(1_000_000);
    expect(a.ranks.map((r) => r.rank)).toEqual([0, 1]);
    expect(a.ranks[1].spans[0]).toMatchObject({ start: 2.5, end: 3.5 });
    expect(extent(a)).toEqual({ start: 0.1, end: 6.5 });
    expect(extent(a, (s) => s.cat === 'send')).toEqual({ start: 1.1, end: 1.3 });
  });

  it('refuses two traces of one rank', () => {
    expect(() => alignTraces([traces[0], traces[0]])).toThrow(/rank 1 sent two traces/);
  });
});

describe('toChromeTrace', () => {
  const trace = toChromeTrace(traces, { jobName: 'demo', pid: 7 });
  // What a viewer reads: the file as text.
  const parsed: unknown = JSON.parse(JSON.stringify(trace));

  it('is a valid Chrome trace with one named lane per rank', () => {
    expect(chromeTraceProblems(parsed, { ranks: [0, 1] })).toEqual([]);
    const meta = trace.traceEvents.filter((e) => e.ph === 'M');
    expect(meta).toContainEqual({ name: 'process_name', ph: 'M', pid: 7, tid: 0, args: { name: 'demo' } });
    expect(meta).toContainEqual({ name: 'thread_name', ph: 'M', pid: 7, tid: 0, args: { name: 'rank 0' } });
    expect(meta).toContainEqual({ name: 'thread_name', ph: 'M', pid: 7, tid: 1, args: { name: 'rank 1' } });
    expect(trace.displayTimeUnit).toBe('ms');
    expect(trace.otherData).toMatchObject({ ranks: 2, originWallMs: 1_000_000 });
  });

  it('writes complete events in aligned microseconds, parents first, with micro-batch args', () => {
    const x = trace.traceEvents.filter((e): e is CompleteEvent => e.ph === 'X');
    expect(x).toHaveLength(5);
    const rank1 = x.filter((e) => e.tid === 1);
    expect(rank1.map((e) => e.name)).toEqual(['step', 'forward', 'backward']);
    expect(rank1[0]).toMatchObject({ ts: 2500, dur: 4000, pid: 7, cat: 'step' });
    expect(rank1[2]).toMatchObject({ ts: 3500, dur: 2000, args: { micro: 0 } });
    expect(rank1[0].args).toBeUndefined();
    const rank0 = x.filter((e) => e.tid === 0);
    expect(rank0[0]).toMatchObject({ ts: 100, dur: 1000 });
  });

  it('keeps nesting through the microsecond rounding', () => {
    // Times that do not land on whole nanoseconds, a child ending exactly with its parent.
    const awkward: RankTrace = {
      rank: 0,
      epochWallMs: 0.1 + 0.2,
      spans: Array.from({ length: 200 }, (_, i) => {
        const s = i * 0.7 + 1 / 3;
        return [span('p', 'step', s, s + 0.7), span('c', 'forward', s + 0.1 / 3, s + 0.7)];
      }).flat(),
    };
    expect(chromeTraceProblems(JSON.parse(JSON.stringify(toChromeTrace([awkward]))))).toEqual([]);
  });
});

describe('chromeTraceProblems', () => {
  const lane = (tid: number, name = `rank ${tid}`) => ({
    name: 'thread_name',
    ph: 'M',
    pid: 1,
    tid,
    args: { name },
  });
  const x = (tid: number, ts: number, dur: number) => ({
    name: 'f',
    cat: 'forward',
    ph: 'X',
    pid: 1,
    tid,
    ts,
    dur,
  });

  it('rejects what is not a trace', () => {
    expect(chromeTraceProblems({})).toEqual(['not a Chrome trace: no traceEvents array']);
    expect(chromeTraceProblems(null)).toHaveLength(1);
  });

  it('rejects overlapping events in a lane, but not across lanes', () => {
    expect(chromeTraceProblems({ traceEvents: [lane(0), lane(1), x(0, 0, 10), x(1, 5, 10)] })).toEqual([]);
    const p = chromeTraceProblems({ traceEvents: [lane(0), x(0, 0, 10), x(0, 5, 10)] });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/lane 1:0: .*overlaps/);
  });

  it('rejects unnamed lanes, duplicate names, bad times and missing ranks', () => {
    expect(chromeTraceProblems({ traceEvents: [x(0, 0, 1)] })).toEqual([
      'lane 1:0 has 0 thread_name events, expected 1',
    ]);
    expect(chromeTraceProblems({ traceEvents: [lane(0, 'a'), lane(1, 'a')] })).toEqual([
      'two lanes share a thread name',
    ]);
    expect(chromeTraceProblems({ traceEvents: [lane(0), x(0, -1, 1)] })[0]).toMatch(/non-negative/);
    expect(chromeTraceProblems({ traceEvents: [lane(0)] }, { ranks: [0, 1] })[0]).toMatch(
      /lanes are ranks \[0\], expected \[0, 1\]/,
    );
  });
});

describe('trace chunks', () => {
  it('carry a rank trace in pieces that reassemble in any order', () => {
    const big: RankTrace = {
      rank: 3,
      epochWallMs: 5,
      dropped: 1,
      spans: Array.from({ length: 25 }, (_, i) => span(`s${i}`, 'forward', i, i + 1)),
    };
    const chunks = traceChunks(big, 10);
    expect(chunks.map((c) => c.spans.length)).toEqual([10, 10, 5]);
    expect(chunks.every((c) => isTraceChunk(JSON.parse(JSON.stringify(c))))).toBe(true);
    expect(isTraceChunk({ kind: 'summary' })).toBe(false);
    const collector = new TraceCollector();
    collector.add(chunks[2]);
    collector.add(chunks[0]);
    expect(collector.completeRanks()).toEqual([]);
    collector.add(chunks[1]);
    expect(collector.traces()).toEqual([big]);
  });

  it('send an empty trace as one chunk', () => {
    const chunks = traceChunks({ rank: 0, epochWallMs: 1, spans: [] });
    expect(chunks).toHaveLength(1);
    const c = new TraceCollector();
    c.add(chunks[0]);
    expect(c.traces()).toEqual([{ rank: 0, epochWallMs: 1, dropped: 0, spans: [] }]);
  });
});
