import { z } from 'zod';

export const TraceSpec = z
  .strictObject({
    enabled: z
      .boolean()
      .default(true)
      .describe(
        'giving the section turns tracing on unless this says `false`, so `trace: {path: t.json}` works',
      ),
    path: z
      .string()
      .min(1)
      .optional()
      .describe(
        "the trace file, relative to the job file's directory; default the run directory's `trace.json`",
      ),
  })
  .describe(
    "A timeline of the run: every rank records spans and the launcher writes them as one Chrome-trace / Perfetto JSON file, one lane per rank, as Horovod's timeline does (`--trace FILE` does the same from the command line).",
  );
export type TraceSpec = z.infer<typeof TraceSpec>;

/** The value of an absent section: no tracing. For `trace: TraceSpec.default(TRACE_OFF)` in the job schema. */
export const TRACE_OFF: TraceSpec = { enabled: false };
