import { z } from 'zod';

/**
 * The job's `trace` section: every rank records a timeline of spans and the launcher writes them as one
 * Chrome-trace / Perfetto JSON file, as Horovod's timeline does.
 *
 *   trace: {enabled: true, path: trace.json}   # relative to the job file's directory
 *
 * Giving the section turns tracing on unless `enabled: false` says otherwise, so `trace: {path: t.json}` works.
 */
export const TraceSpec = z.strictObject({
  enabled: z.boolean().default(true),
  path: z.string().min(1).default('trace.json'),
});
export type TraceSpec = z.infer<typeof TraceSpec>;

/** The value of an absent section: no tracing. For `trace: TraceSpec.default(TRACE_OFF)` in the job schema. */
export const TRACE_OFF: TraceSpec = { enabled: false, path: 'trace.json' };
