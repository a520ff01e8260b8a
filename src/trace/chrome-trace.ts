/**
 * Every rank's timeline as one Chrome-trace JSON file (the "JSON Object Format" that chrome://tracing, Perfetto
 * and speedscope open): one process for the job, one thread lane per rank named "rank N", each span a complete
 * ('X') event in microseconds on the common time base of `alignTraces`.
 */
import { type AlignedTraces, alignTraces } from './align.ts';
import { type Interval, nestingViolations, type RankTrace, type SpanArg } from './timeline.ts';

export interface CompleteEvent {
  readonly name: string;
  readonly cat: string;
  readonly ph: 'X';
  /** Microseconds since the trace's origin. */
  readonly ts: number;
  readonly dur: number;
  readonly pid: number;
  readonly tid: number;
  readonly args?: Readonly<Record<string, SpanArg>>;
}

export interface MetadataEvent {
  readonly name: 'process_name' | 'thread_name' | 'thread_sort_index' | 'process_sort_index';
  readonly ph: 'M';
  readonly pid: number;
  readonly tid: number;
  readonly args: { readonly name: string } | { readonly sort_index: number };
}

export type TraceEvent = CompleteEvent | MetadataEvent;

export interface ChromeTrace {
  readonly traceEvents: readonly TraceEvent[];
  readonly displayTimeUnit: 'ms';
  /** Shown by the viewers' metadata panels; `originWallMs` lets a reader map ts back to wall-clock time. */
  readonly otherData: Readonly<Record<string, string | number>>;
}

export interface ChromeTraceOptions {
  /** The process lane's title. */
  readonly jobName?: string;
  /** The job's process id in the file (one job per file, so any constant will do). */
  readonly pid?: number;
}

/** Rounds to nanoseconds: sub-nanosecond digits are noise from the float arithmetic and only bloat the file. */
const ns = (us: number) => Math.round(us * 1000) / 1000;

/** Merges every rank's spans into one trace: one lane (tid) per rank, times aligned across ranks. */
export function toChromeTrace(traces: readonly RankTrace[], opts: ChromeTraceOptions = {}): ChromeTrace {
  return fromAligned(alignTraces(traces), opts, droppedOf(traces));
}

function droppedOf(traces: readonly RankTrace[]): number {
  return traces.reduce((n, t) => n + (t.dropped ?? 0), 0);
}

function fromAligned(aligned: AlignedTraces, opts: ChromeTraceOptions, dropped: number): ChromeTrace {
  const pid = opts.pid ?? 1;
  const events: TraceEvent[] = [
    { name: 'process_name', ph: 'M', pid, tid: 0, args: { name: opts.jobName ?? 'kd-launch job' } },
  ];
  for (const r of aligned.ranks) {
    events.push(
      { name: 'thread_name', ph: 'M', pid, tid: r.rank, args: { name: `rank ${r.rank}` } },
      { name: 'thread_sort_index', ph: 'M', pid, tid: r.rank, args: { sort_index: r.rank } },
    );
  }
  for (const r of aligned.ranks) {
    // Parents first (earlier start, then longer): viewers that stack events in file order draw them right.
    const spans = [...r.spans].sort((a, b) => a.start - b.start || b.end - a.end);
    for (const s of spans) {
      // Start and end are each rounded, then dur taken between them: rounding is monotonic, so a child that ends
      // inside its parent still does in the file.
      const ts = ns(s.start * 1000);
      const end = ns(s.end * 1000);
      const args: Record<string, SpanArg> = { ...s.args };
      if (s.micro !== undefined) args['micro'] = s.micro;
      if (s.step !== undefined) args['step'] = s.step;
      events.push({
        name: s.name,
        cat: s.cat,
        ph: 'X',
        ts,
        dur: ns(end - ts),
        pid,
        tid: r.rank,
        ...(Object.keys(args).length > 0 ? { args } : {}),
      });
    }
  }
  return {
    traceEvents: events,
    displayTimeUnit: 'ms',
    otherData: {
      generator: 'kd-launch',
      ranks: aligned.ranks.length,
      originWallMs: aligned.originWallMs,
      ...(dropped > 0 ? { droppedSpans: dropped } : {}),
    },
  };
}

/** Tolerance of the nesting check on a file: timestamps are rounded to nanoseconds, 0.001 µs. */
const FILE_TOLERANCE_US = 0.002;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/**
 * What is wrong with a parsed trace file, as kd-launch writes it: the Chrome-trace object shape, complete events
 * with non-negative times, exactly one named lane per thread that has events, and, within each lane, events that
 * nest. `ranks`, when given, is the exact set of lanes expected. Empty when the file is valid.
 */
export function chromeTraceProblems(trace: unknown, expect: { ranks?: readonly number[] } = {}): string[] {
  if (!isObject(trace) || !Array.isArray(trace['traceEvents']))
    return ['not a Chrome trace: no traceEvents array'];
  const problems: string[] = [];
  const names = new Map<string, string[]>();
  const lanes = new Map<string, Interval[]>();
  const events: unknown[] = trace['traceEvents'];
  events.forEach((e, i) => {
    if (!isObject(e) || typeof e['name'] !== 'string' || typeof e['ph'] !== 'string') {
      problems.push(`event ${i}: needs a name and a ph`);
      return;
    }
    if (!isInt(e['pid']) || !isInt(e['tid'])) {
      problems.push(`event ${i} ("${e['name']}"): pid and tid must be integers`);
      return;
    }
    const lane = `${e['pid']}:${e['tid']}`;
    if (e['ph'] === 'M') {
      const args = e['args'];
      if (e['name'] === 'thread_name') {
        if (!isObject(args) || typeof args['name'] !== 'string')
          problems.push(`event ${i}: thread_name without args.name`);
        else names.set(lane, [...(names.get(lane) ?? []), args['name']]);
      }
      return;
    }
    if (e['ph'] !== 'X') {
      problems.push(`event ${i} ("${e['name']}"): phase ${e['ph']}, expected X or M`);
      return;
    }
    if (!isTime(e['ts']) || !isTime(e['dur'])) {
      problems.push(`event ${i} ("${e['name']}"): ts and dur must be non-negative numbers`);
      return;
    }
    const list = lanes.get(lane) ?? [];
    list.push({ name: e['name'], start: e['ts'], end: e['ts'] + e['dur'] });
    lanes.set(lane, list);
  });
  for (const [lane, list] of lanes) {
    const n = names.get(lane) ?? [];
    if (n.length !== 1) problems.push(`lane ${lane} has ${n.length} thread_name events, expected 1`);
    for (const p of nestingViolations(list, FILE_TOLERANCE_US)) problems.push(`lane ${lane}: ${p}`);
  }
  const titles = [...names.values()].flat();
  if (new Set(titles).size !== titles.length) problems.push('two lanes share a thread name');
  if (expect.ranks) {
    const tids = [...names.keys()].map((k) => Number(k.split(':')[1])).sort((a, b) => a - b);
    const want = [...expect.ranks].sort((a, b) => a - b);
    if (tids.join(',') !== want.join(','))
      problems.push(`lanes are ranks [${tids.join(', ')}], expected [${want.join(', ')}]`);
    const pids = new Set([...names.keys()].map((k) => k.split(':')[0]));
    if (pids.size > 1) problems.push(`rank lanes span ${pids.size} processes, expected one per job`);
  }
  return problems;
}
