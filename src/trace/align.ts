/**
 * One time base for every rank. Each rank times its spans from its own epoch and sends that epoch's wall-clock
 * time; shifting every rank by (its epoch − the earliest epoch) puts all spans on the earliest rank's clock.
 * Ranks on one node read the same system clock, so they align to microseconds; ranks on different nodes align
 * as well as the nodes' clocks agree (NTP: typically well under a millisecond on one network).
 */
import type { RankTrace, Span } from './timeline.ts';

/** One rank's spans on the common time base: milliseconds since `AlignedTraces.originWallMs`. */
export interface AlignedRank {
  readonly rank: number;
  readonly spans: readonly Span[];
}

export interface AlignedTraces {
  /** Wall-clock milliseconds of time 0: the earliest rank's epoch. */
  readonly originWallMs: number;
  /** In rank order. */
  readonly ranks: readonly AlignedRank[];
}

export function alignTraces(traces: readonly RankTrace[]): AlignedTraces {
  const seen = new Set<number>();
  for (const t of traces) {
    if (seen.has(t.rank)) throw new Error(`rank ${t.rank} sent two traces`);
    seen.add(t.rank);
  }
  if (traces.length === 0) return { originWallMs: 0, ranks: [] };
  const originWallMs = Math.min(...traces.map((t) => t.epochWallMs));
  const ranks = [...traces]
    .sort((a, b) => a.rank - b.rank)
    .map((t) => {
      const shift = t.epochWallMs - originWallMs;
      return {
        rank: t.rank,
        spans: t.spans.map((s) => ({ ...s, start: s.start + shift, end: s.end + shift })),
      };
    });
  return { originWallMs, ranks };
}

/** The smallest window holding every span that `include` accepts, over all ranks; undefined when none does. */
export function extent(
  aligned: AlignedTraces,
  include: (s: Span, rank: number) => boolean = () => true,
): { start: number; end: number } | undefined {
  let start = Number.POSITIVE_INFINITY;
  let end = Number.NEGATIVE_INFINITY;
  for (const r of aligned.ranks) {
    for (const s of r.spans) {
      if (!include(s, r.rank)) continue;
      start = Math.min(start, s.start);
      end = Math.max(end, s.end);
    }
  }
  return start <= end ? { start, end } : undefined;
}
