/** One problem in a job file, located by its dotted field path and, where known, its line and column. */
export interface ConfigIssue {
  path: string;
  line: number | undefined;
  /** 1-based, with `line`: where in the line the field's node starts. */
  column?: number;
  /** The value came from the command line (`--set KEY=VALUE`), not the file: the KEY it was set by. */
  setBy?: string;
  message: string;
}

/** Problems printed one a line; the rest are counted on one more (2,000 bad stages are not 2,000 lines). */
const MAX_PRINTED_ISSUES = 20;
/** Longest problem printed: a message that quotes a 5,000-character value from the file is cut, not wrapped. */
const MAX_PRINTED_CHARS = 400;

/**
 * A job file that cannot run. Its message names the file, each field and its position (`file:LINE:COL: field:
 * message`, or `file: --set KEY: message` for a value given on the command line): one line per problem.
 */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    const where = escaped(file);
    const lines = issues
      .slice(0, MAX_PRINTED_ISSUES)
      .map((i) => `${where}${position(i)}: ${clipped(escaped(described(i)))}`);
    const more = issues.length - MAX_PRINTED_ISSUES;
    if (more > 0) lines.push(`${where}: and ${more} more problem${more > 1 ? 's' : ''}`);
    super(lines.join('\n'));
    this.name = 'ConfigError';
  }
}

function position({ line, column }: ConfigIssue): string {
  if (line === undefined) return '';
  return column === undefined ? `:${line}` : `:${line}:${column}`;
}

/** The issue after its position: the field (and the `--set` that gave its value), then the message. */
function described({ path, setBy, message }: ConfigIssue): string {
  const field = path ? `${path}: ${message}` : message;
  if (setBy === undefined) return field;
  return `--set ${setBy}: ${path === setBy ? message : field}`;
}

/**
 * Text fit for one line of a terminal: messages quote the file's own values (names, paths, keys), which may hold
 * line breaks or escape sequences.
 */
function escaped(text: string): string {
  return text.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function clipped(text: string): string {
  const chars = Array.from(text);
  return chars.length > MAX_PRINTED_CHARS ? `${chars.slice(0, MAX_PRINTED_CHARS - 1).join('')}…` : text;
}
