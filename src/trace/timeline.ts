/**
 * A per-process timeline of spans, as Horovod's timeline records one: what each rank was doing, when, for which
 * micro-batch. Imports nothing from the rest of kd-launch, so any layer (comm, engine, pipeline, launcher) can
 * record into it.
 *
 * Spans on one rank form a forest: a span lies inside its parent or after it, never across its end. That is what
 * a Chrome-trace lane can draw, and what makes busy/idle sums meaningful. The recorder enforces it as spans end
 * (`NestingError`), so a bad instrumentation is caught in the first step, not by a reader of the trace file.
 */

/** What a span was spent on. The known ones drive the busy/idle accounting; any other name is accepted. */
export type KnownCategory =
  | 'forward'
  | 'backward'
  | 'send'
  | 'recv'
  | 'wait'
  | 'allreduce'
  | 'optimizer'
  | 'step'
  | 'data'
  | 'eval'
  | 'checkpoint';
// `string & {}` keeps editor completion for the known names while accepting others.
export type SpanCategory = KnownCategory | (string & {});

/** A value a span may carry to the trace viewer's "args" panel. */
export type SpanArg = number | string | boolean;

/** Optional facts about a span: the micro-batch and optimizer step it belongs to, anything else. */
export interface SpanMeta {
  readonly micro?: number;
  readonly step?: number;
  readonly args?: Readonly<Record<string, SpanArg>>;
}

/** One finished span. `start` and `end` are milliseconds since the recorder's epoch (`RankTrace.epochWallMs`). */
export interface Span extends SpanMeta {
  readonly name: string;
  readonly cat: SpanCategory;
  readonly start: number;
  readonly end: number;
}

/** Everything one rank recorded: its spans and the wall-clock time of its epoch, which aligns it with the others. */
export interface RankTrace {
  readonly rank: number;
  /** Wall-clock milliseconds (Unix epoch, sub-millisecond) at which this rank's span times are 0. */
  readonly epochWallMs: number;
  readonly spans: readonly Span[];
  /** Spans not kept because the recorder was full (`maxSpans`). */
  readonly dropped?: number;
}

/** An end that does not close the innermost open span: the spans would overlap without nesting. */
export class NestingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NestingError';
  }
}

export interface TimelineOptions {
  /** Off: every call returns at once and nothing is kept. */
  readonly enabled?: boolean;
  /** Monotonic milliseconds; `performance.now` by default. Tests pass a fake clock. */
  readonly now?: () => number;
  /** Wall-clock milliseconds at `now()`'s current value; derived from `performance.timeOrigin` by default. */
  readonly epochWallMs?: number;
  /** Spans kept at most (later ones are counted as dropped), so a long traced run cannot exhaust memory. */
  readonly maxSpans?: number;
}

/** What `begin` returns, for the matching `end`. */
export type SpanHandle = number;

interface Open {
  readonly id: number;
  readonly name: string;
  readonly cat: SpanCategory;
  readonly start: number;
  readonly meta: SpanMeta | undefined;
}

const DEFAULT_MAX_SPANS = 1_000_000;
/** The handle a disabled recorder hands out; `end` ignores it. */
const NO_SPAN = -1;

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

export class Timeline {
  /** A recorder that records nothing; cheap enough to leave every instrumentation call in place. */
  static readonly disabled: Timeline = new Timeline({ enabled: false });

  readonly enabled: boolean;
  readonly epochWallMs: number;
  private readonly now: () => number;
  private readonly t0: number;
  private readonly maxSpans: number;
  private readonly stack: Open[] = [];
  private readonly done: Span[] = [];
  private nextId = 0;
  private droppedCount = 0;

  constructor(opts: TimelineOptions = {}) {
    this.enabled = opts.enabled ?? true;
    this.now = opts.now ?? (() => performance.now());
    this.t0 = this.now();
    // performance.timeOrigin + performance.now() reads the system clock at sub-millisecond resolution, so ranks on
    // one node share a time base to within microseconds; across nodes it is as good as their clock sync (NTP).
    this.epochWallMs = opts.epochWallMs ?? performance.timeOrigin + this.t0;
    this.maxSpans = opts.maxSpans ?? DEFAULT_MAX_SPANS;
  }

  /** Opens a span; close it with `end(handle)` before (or as) its parent ends. */
  begin(name: string, cat: SpanCategory, meta?: SpanMeta): SpanHandle {
    if (!this.enabled) return NO_SPAN;
    const id = this.nextId++;
    this.stack.push({ id, name, cat, start: this.now() - this.t0, meta });
    return id;
  }

  /**
   * Closes the span `handle` opened. It must be the innermost open span: closing an outer one first would make
   * the two overlap without nesting, so that span is discarded and a `NestingError` thrown.
   */
  end(handle: SpanHandle): void {
    if (!this.enabled || handle === NO_SPAN) return;
    const end = this.now() - this.t0;
    const top = this.stack[this.stack.length - 1];
    if (top?.id === handle) {
      this.stack.pop();
      this.keep(top, end);
      return;
    }
    const i = this.stack.findIndex((o) => o.id === handle);
    if (i < 0) throw new NestingError(`span #${handle} is not open (ended twice, or never begun)`);
    const [bad] = this.stack.splice(i, 1);
    throw new NestingError(
      `span "${bad.name}" (${bad.cat}) ended while "${top.name}" (${top.cat}), begun inside it, is still open: ` +
        'spans on one rank must nest (concurrent work needs one enclosing span, not one span each)',
    );
  }

  /**
   * Runs `fn` inside a span. An async `fn` is timed until its promise settles; the span ends whether `fn` returns
   * or throws.
   */
  span<T>(name: string, cat: SpanCategory, fn: () => Promise<T>, meta?: SpanMeta): Promise<T>;
  span<T>(name: string, cat: SpanCategory, fn: () => T, meta?: SpanMeta): T;
  span<T>(name: string, cat: SpanCategory, fn: () => T, meta?: SpanMeta): T {
    if (!this.enabled) return fn();
    const h = this.begin(name, cat, meta);
    let result: T;
    try {
      result = fn();
    } catch (err) {
      this.endQuietly(h);
      throw err;
    }
    if (!isPromiseLike(result)) {
      this.end(h);
      return result;
    }
    return Promise.resolve(result).then(
      (v) => {
        this.end(h);
        return v;
      },
      (err: unknown) => {
        // The program's own error is the one worth seeing; a nesting error behind it would only hide it.
        this.endQuietly(h);
        throw err;
      },
    ) as T;
  }

  /** Finished spans, in the order they ended. */
  spans(): readonly Span[] {
    return this.done;
  }

  /** Spans begun and not yet ended (they are not part of `spans()`). */
  get openSpans(): number {
    return this.stack.length;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  /** This rank's trace, ready to send to the launcher. */
  toRankTrace(rank: number): RankTrace {
    return { rank, epochWallMs: this.epochWallMs, spans: this.done.slice(), dropped: this.droppedCount };
  }

  private endQuietly(handle: SpanHandle): void {
    try {
      this.end(handle);
    } catch {
      // Already reported or superseded by the caller's own error.
    }
  }

  private keep(o: Open, end: number): void {
    if (this.done.length >= this.maxSpans) {
      this.droppedCount++;
      return;
    }
    const span: Span = { name: o.name, cat: o.cat, start: o.start, end, ...o.meta };
    this.done.push(span);
  }
}

/** Anything with a name and a [start, end] interval: spans, or events read back from a trace file. */
export interface Interval {
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

/**
 * Where the intervals of one lane fail to nest: an interval that ends before it starts, or one that starts inside
 * another and ends after it. Touching intervals (one ends where the next starts) nest. `tolerance` absorbs
 * rounding, e.g. after a conversion to microseconds. Empty when the lane is well-formed.
 */
export function nestingViolations(intervals: readonly Interval[], tolerance = 0): string[] {
  const problems: string[] = [];
  const sorted = intervals
    .filter((iv) => {
      const ok = Number.isFinite(iv.start) && Number.isFinite(iv.end) && iv.end >= iv.start - tolerance;
      if (!ok) problems.push(`"${iv.name}" has a bad interval [${iv.start}, ${iv.end}]`);
      return ok;
    })
    // Parents before children: earlier start first, and for equal starts the longer one.
    .sort((a, b) => a.start - b.start || b.end - a.end);
  const open: Interval[] = [];
  for (const iv of sorted) {
    while (open.length > 0 && open[open.length - 1].end <= iv.start + tolerance) open.pop();
    const parent = open[open.length - 1];
    if (parent && iv.end > parent.end + tolerance) {
      problems.push(
        `"${iv.name}" [${iv.start}, ${iv.end}] overlaps "${parent.name}" [${parent.start}, ${parent.end}] without nesting`,
      );
      continue;
    }
    open.push(iv);
  }
  return problems;
}

/** Throws a `NestingError` listing the first few violations, if any. */
export function assertNested(intervals: readonly Interval[], tolerance = 0): void {
  const problems = nestingViolations(intervals, tolerance);
  if (problems.length > 0) {
    const more = problems.length > 5 ? ` (and ${problems.length - 5} more)` : '';
    throw new NestingError(`spans do not nest: ${problems.slice(0, 5).join('; ')}${more}`);
  }
}
