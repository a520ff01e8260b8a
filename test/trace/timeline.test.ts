import { describe, expect, it } from 'vitest';
import { assertNested, NestingError, nestingViolations, Timeline } from '../../src/trace/timeline.ts';

/** A clock that moves only when told: span times become exact. */
function fakeClock(start = 100) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe('Timeline', () => {
  it('records nested spans with times relative to its epoch, micro-batch and step', () => {
    const clock = fakeClock();
    const tl = new Timeline({ now: clock.now, epochWallMs: 1_700_000_000_000 });
    const step = tl.begin('step', 'step', { step: 3 });
    clock.advance(1);
    tl.span(
      'forward',
      'forward',
      () => {
        clock.advance(2);
      },
      { micro: 0 },
    );
    tl.span('backward', 'backward', () => clock.advance(4), { micro: 0, args: { bytes: 10 } });
    tl.end(step);
    expect(tl.spans()).toEqual([
      { name: 'forward', cat: 'forward', start: 1, end: 3, micro: 0 },
      { name: 'backward', cat: 'backward', start: 3, end: 7, micro: 0, args: { bytes: 10 } },
      { name: 'step', cat: 'step', start: 0, end: 7, step: 3 },
    ]);
    expect(tl.toRankTrace(2)).toMatchObject({ rank: 2, epochWallMs: 1_700_000_000_000, dropped: 0 });
    assertNested(tl.spans());
  });

  it('times async work until its promise settles, and ends the span when it rejects', async () => {
    const clock = fakeClock(0);
    const tl = new Timeline({ now: clock.now });
    const v = await tl.span('recv', 'recv', async () => {
      await Promise.resolve();
      clock.advance(5);
      return 42;
    });
    expect(v).toBe(42);
    await expect(
      tl.span('send', 'send', async () => {
        clock.advance(1);
        throw new Error('peer gone');
      }),
    ).rejects.toThrow('peer gone');
    expect(() =>
      tl.span('sync', 'other', () => {
        throw new Error('sync failure');
      }),
    ).toThrow('sync failure');
    expect(tl.spans().map((s) => [s.name, s.start, s.end])).toEqual([
      ['recv', 0, 5],
      ['send', 5, 6],
      ['sync', 6, 6],
    ]);
    expect(tl.openSpans).toBe(0);
  });

  it('refuses an end that would make two spans overlap without nesting', () => {
    const clock = fakeClock();
    const tl = new Timeline({ now: clock.now });
    const a = tl.begin('a', 'forward');
    clock.advance(1);
    const b = tl.begin('b', 'backward');
    clock.advance(1);
    expect(() => tl.end(a)).toThrow(NestingError);
    tl.end(b); // b is still well-formed and kept; a is discarded
    expect(() => tl.end(a)).toThrow(/not open/);
    expect(tl.spans().map((s) => s.name)).toEqual(['b']);
    assertNested(tl.spans());
  });

  it('catches two concurrent async spans on one rank', async () => {
    const tl = new Timeline();
    const tick = () => new Promise((r) => setTimeout(r, 5));
    // `recv` begins after `send` and ends first: it happens to nest, so it is kept.
    const first = tl.span('send', 'send', async () => {
      await tick();
      await tick();
    });
    await Promise.all([first, tl.span('recv', 'recv', tick)]);
    // `outer` ends while `inner`, begun after it, still runs: the two overlap without nesting.
    const outer = tl.span('outer', 'wait', tick);
    const inner = tl.span('inner', 'wait', async () => {
      await tick();
      await tick();
    });
    await expect(outer).rejects.toThrow(NestingError);
    await inner;
    expect(tl.spans().map((s) => s.name)).toEqual(['recv', 'send', 'inner']);
  });

  it('does nothing when disabled', () => {
    const tl = Timeline.disabled;
    const h = tl.begin('x', 'forward');
    tl.end(h);
    expect(tl.span('y', 'forward', () => 7)).toBe(7);
    expect(tl.spans()).toEqual([]);
    expect(tl.enabled).toBe(false);
  });

  it('keeps at most maxSpans and counts the rest as dropped', () => {
    const tl = new Timeline({ maxSpans: 2 });
    for (let i = 0; i < 5; i++) tl.span('s', 'other', () => i);
    expect(tl.spans().length).toBe(2);
    expect(tl.toRankTrace(0).dropped).toBe(3);
  });

  it('anchors its epoch on the wall clock', () => {
    const before = Date.now();
    const tl = new Timeline();
    expect(Math.abs(tl.epochWallMs - before)).toBeLessThan(1000);
  });
});

describe('nestingViolations', () => {
  const iv = (name: string, start: number, end: number) => ({ name, start, end });

  it('accepts nested, touching and identical intervals in any order', () => {
    expect(
      nestingViolations([
        iv('c', 2, 3),
        iv('step', 0, 10),
        iv('b', 1, 5),
        iv('d', 5, 10),
        iv('e', 5, 10),
        iv('zero', 4, 4),
      ]),
    ).toEqual([]);
  });

  it('rejects partial overlap and backwards intervals', () => {
    const p = nestingViolations([iv('a', 0, 5), iv('b', 3, 8), iv('bad', 9, 8)]);
    expect(p).toHaveLength(2);
    expect(p.join('\n')).toMatch(/"b" \[3, 8\] overlaps "a" \[0, 5\]/);
    expect(p.join('\n')).toMatch(/"bad" has a bad interval/);
    expect(() => assertNested([iv('a', 0, 5), iv('b', 3, 8)])).toThrow(NestingError);
  });

  it('finds an overlap with a grandparent', () => {
    expect(nestingViolations([iv('p', 0, 10), iv('c', 1, 4), iv('g', 2, 3), iv('x', 3.5, 11)])).toHaveLength(
      1,
    );
  });

  it('tolerates rounding within the tolerance', () => {
    expect(nestingViolations([iv('a', 0, 5), iv('b', 1, 5.0004)], 0.001)).toEqual([]);
    expect(nestingViolations([iv('a', 0, 5), iv('b', 1, 5.0004)])).toHaveLength(1);
  });
});
