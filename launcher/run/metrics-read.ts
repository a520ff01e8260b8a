/**
 * Reads a run's `metrics.jsonl` back. A killed run leaves a truncated last line, and a newer writer may add line
 * types: such lines are skipped and counted, never fatal. Each line is checked for the fields its readers use
 * (the HTML report), not for every field its type declares.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { MetricsLine } from './metrics-lines.ts';

/** A line of the file that was left out, and why (1-based line number). */
export interface SkippedLine {
  line: number;
  reason: string;
}

export interface MetricsFile {
  lines: MetricsLine[];
  skipped: SkippedLine[];
}

const num = z.number();
/** A measured value that may have been NaN or ±Infinity, which JSON writes as null. */
const measured = num.nullable();
const label = z.looseObject({ stage: z.string(), seed: num.optional(), run: num, runs: num }).optional();

const SCHEMAS = {
  run: z.looseObject({ job: z.string(), world: num, nodes: num, started: z.string() }),
  step: z.looseObject({ label, step: num, loss: measured, lr: num, samples_per_s: num, comm_fraction: num }),
  eval: z.looseObject({ label, step: num, accuracy: num }),
  stage: z.looseObject({ label: label.unwrap(), accuracy: num, parameters: num, train_s: num }),
  memory: z.looseObject({ rank: num, state_bytes: num }),
  summary: z.looseObject({}),
  stages: z.looseObject({
    output_root: z.string(),
    rows: z.array(
      z.looseObject({
        stage: z.string(),
        seeds: z.array(num),
        accuracies: z.array(num),
        accuracy_mean: num,
        accuracy_std: num,
      }),
    ),
  }),
  timeline: z.looseObject({ ranks: z.array(z.looseObject({ rank: num, busy: num, idle: num })) }),
  end: z.looseObject({ ok: z.boolean(), wall_s: num }),
} satisfies Record<MetricsLine['type'], z.ZodType>;

function isKnownType(type: unknown): type is keyof typeof SCHEMAS {
  return typeof type === 'string' && Object.hasOwn(SCHEMAS, type);
}

/** One line: the parsed line, or why it is skipped. */
function parseLine(text: string): MetricsLine | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'not JSON (a line cut short when the run was killed?)';
  }
  const type = (value as { type?: unknown } | null)?.type;
  if (!isKnownType(type)) return `unknown line type ${JSON.stringify(type) ?? 'undefined'}`;
  const checked = SCHEMAS[type].safeParse(value);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    return `a '${type}' line with a bad ${issue.path.join('.') || 'value'}: ${issue.message}`;
  }
  return value as MetricsLine;
}

export function parseMetrics(text: string): MetricsFile {
  const file: MetricsFile = { lines: [], skipped: [] };
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    const parsed = parseLine(raw);
    if (typeof parsed === 'string') file.skipped.push({ line: i + 1, reason: parsed });
    else file.lines.push(parsed);
  });
  return file;
}

export function readMetrics(path: string): MetricsFile {
  return parseMetrics(readFileSync(path, 'utf8'));
}

/** The lines of one type, typed. */
export function linesOf<T extends MetricsLine['type']>(
  lines: readonly MetricsLine[],
  type: T,
): Extract<MetricsLine, { type: T }>[] {
  return lines.filter((l): l is Extract<MetricsLine, { type: T }> => l.type === type);
}

/** The last line of a type: a later line of a type written once supersedes an earlier one. */
export function lastOf<T extends MetricsLine['type']>(lines: readonly MetricsLine[], type: T) {
  return linesOf(lines, type).at(-1);
}
