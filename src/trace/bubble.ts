/**
 * Busy and idle time per rank from the timeline: the pipeline bubble, measured. A rank is busy while any span it
 * counts as work is open (nested spans are counted once: the union of their intervals) and idle the rest of the
 * window, which is the same window for every rank, so the fractions compare across stages.
 */
import { alignTraces, extent } from './align.ts';
import type { RankTrace, Span, SpanCategory } from './timeline.ts';

/** Work that the pipeline bubble is measured against; waiting, sending and receiving are not. */
export const COMPUTE_CATEGORIES: readonly SpanCategory[] = ['forward', 'backward', 'optimizer'];

export interface Utilisation {
  readonly rank: number;
  readonly busyMs: number;
  readonly idleMs: number;
  /** busyMs / window length; 0 for an empty window. */
  readonly busy: number;
  /** 1 − busy: the rank's bubble over the window. */
  readonly idle: number;
}

export interface UtilisationOptions {
  /**
   * The window in milliseconds on the aligned time base (since the earliest rank's epoch, as `alignTraces` gives
   * it). Default: from the first span of any rank to the last, over the spans `include` keeps.
   */
  readonly window?: { readonly start: number; readonly end: number };
  /** Which spans count as work. Default: categories in `COMPUTE_CATEGORIES`. */
  readonly busy?: (s: Span) => boolean;
  /** Which spans take part at all (e.g. one optimizer step's); default all. Applied before `busy`. */
  readonly include?: (s: Span) => boolean;
}

/** Length of the union of the intervals, clipped to [lo, hi]. */
function unionLength(intervals: { start: number; end: number }[], lo: number, hi: number): number {
  const clipped = intervals
    .map((iv) => ({ start: Math.max(iv.start, lo), end: Math.min(iv.end, hi) }))
    .filter((iv) => iv.end > iv.start)
    .sort((a, b) => a.start - b.start);
  let total = 0;
  let curStart = Number.NaN;
  let curEnd = Number.NEGATIVE_INFINITY;
  for (const iv of clipped) {
    if (iv.start > curEnd) {
      if (curEnd > curStart) total += curEnd - curStart;
      curStart = iv.start;
      curEnd = iv.end;
    } else curEnd = Math.max(curEnd, iv.end);
  }
  if (curEnd > curStart) total += curEnd - curStart;
  return total;
}

/** Busy and idle fractions of every rank over one common window, in rank order. */
export function utilisation(traces: readonly RankTrace[], opts: UtilisationOptions = {}): Utilisation[] {
  const aligned = alignTraces(traces);
  const include = opts.include ?? (() => true);
  const isBusy = opts.busy ?? ((s: Span) => COMPUTE_CATEGORIES.includes(s.cat));
  const window = opts.window ?? extent(aligned, include) ?? { start: 0, end: 0 };
  const length = Math.max(0, window.end - window.start);
  return aligned.ranks.map((r) => {
    const busyMs = unionLength(
      r.spans.filter((s) => include(s) && isBusy(s)),
      window.start,
      window.end,
    );
    const busy = length > 0 ? busyMs / length : 0;
    return { rank: r.rank, busyMs, idleMs: length - busyMs, busy, idle: length > 0 ? 1 - busy : 0 };
  });
}

/** The mean idle fraction of `ranks` (all by default): the measured bubble of a pipeline's stages. */
export function meanIdle(u: readonly Utilisation[], ranks?: readonly number[]): number {
  const picked = ranks ? u.filter((x) => ranks.includes(x.rank)) : u;
  return picked.length === 0 ? 0 : picked.reduce((s, x) => s + x.idle, 0) / picked.length;
}
