/**
 * How a rank's trace reaches the launcher: as ordinary report documents on the heartbeat stream (the way
 * `ctx.report` travels), cut into chunks so that no message nears the control plane's message-size limit, and
 * marked so the launcher files them apart from the program's own reports.
 */
import type { RankTrace, Span } from './timeline.ts';

export const TRACE_CHUNK_KIND = 'kd-launch/trace';

export interface TraceChunk {
  readonly kind: typeof TRACE_CHUNK_KIND;
  readonly rank: number;
  readonly epochWallMs: number;
  /** 0, 1, … in sending order; `count` chunks in all. */
  readonly seq: number;
  readonly count: number;
  readonly dropped: number;
  readonly spans: readonly Span[];
}

/** About 100 bytes of JSON per span: 10,000 spans make a ~1 MB message, far below gRPC's limit (64 MiB here). */
export const SPANS_PER_CHUNK = 10_000;

export function traceChunks(trace: RankTrace, spansPerChunk = SPANS_PER_CHUNK): TraceChunk[] {
  const count = Math.max(1, Math.ceil(trace.spans.length / spansPerChunk));
  return Array.from({ length: count }, (_, seq) => ({
    kind: TRACE_CHUNK_KIND,
    rank: trace.rank,
    epochWallMs: trace.epochWallMs,
    seq,
    count,
    dropped: trace.dropped ?? 0,
    spans: trace.spans.slice(seq * spansPerChunk, (seq + 1) * spansPerChunk),
  }));
}

export function isTraceChunk(v: unknown): v is TraceChunk {
  if (typeof v !== 'object' || v === null) return false;
  const c = v as Partial<Record<keyof TraceChunk, unknown>>;
  return (
    c.kind === TRACE_CHUNK_KIND &&
    typeof c.rank === 'number' &&
    typeof c.epochWallMs === 'number' &&
    typeof c.seq === 'number' &&
    typeof c.count === 'number' &&
    Array.isArray(c.spans)
  );
}

/** Reassembles the chunks of every rank, whatever order they arrive in. */
export class TraceCollector {
  private readonly byRank = new Map<number, { chunks: Map<number, TraceChunk>; count: number }>();

  add(chunk: TraceChunk): void {
    const entry = this.byRank.get(chunk.rank) ?? {
      chunks: new Map<number, TraceChunk>(),
      count: chunk.count,
    };
    entry.chunks.set(chunk.seq, chunk);
    this.byRank.set(chunk.rank, entry);
  }

  /** Ranks whose every chunk arrived, in rank order. */
  completeRanks(): number[] {
    return [...this.byRank.entries()]
      .filter(([, e]) => e.chunks.size === e.count)
      .map(([rank]) => rank)
      .sort((a, b) => a - b);
  }

  /** The traces of the ranks that sent every chunk, in rank order. */
  traces(): RankTrace[] {
    return this.completeRanks().map((rank) => {
      const e = this.byRank.get(rank)!;
      const chunks = [...e.chunks.values()].sort((a, b) => a.seq - b.seq);
      return {
        rank,
        epochWallMs: chunks[0].epochWallMs,
        dropped: chunks[0].dropped,
        spans: chunks.flatMap((c) => c.spans),
      };
    });
  }
}
