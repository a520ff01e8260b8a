/** The timeline: recording spans per rank, merging them into one Chrome trace, and the busy/idle figures. */
export { type AlignedRank, type AlignedTraces, alignTraces, extent } from './align.ts';
export {
  COMPUTE_CATEGORIES,
  meanIdle,
  type Utilisation,
  type UtilisationOptions,
  utilisation,
} from './bubble.ts';
export {
  type ChromeTrace,
  type ChromeTraceOptions,
  type CompleteEvent,
  chromeTraceProblems,
  type MetadataEvent,
  type TraceEvent,
  toChromeTrace,
} from './chrome-trace.ts';
export {
  assertNested,
  type Interval,
  type KnownCategory,
  NestingError,
  nestingViolations,
  type RankTrace,
  type Span,
  type SpanArg,
  type SpanCategory,
  type SpanHandle,
  type SpanMeta,
  Timeline,
  type TimelineOptions,
} from './timeline.ts';
export {
  isTraceChunk,
  SPANS_PER_CHUNK,
  TRACE_CHUNK_KIND,
  type TraceChunk,
  TraceCollector,
  traceChunks,
} from './wire.ts';
