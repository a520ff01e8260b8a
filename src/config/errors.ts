/** One problem in a job file, located by its dotted field path and, where known, its line. */
export interface ConfigIssue {
  path: string;
  line: number | undefined;
  message: string;
}

/** A job file that cannot run. Its message names the file, each field and its line: one line per problem. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    super(
      issues
        .map(
          (i) =>
            `${file}${i.line !== undefined ? `:${i.line}` : ''}: ${i.path ? `${i.path}: ` : ''}${i.message}`,
        )
        .join('\n'),
    );
    this.name = 'ConfigError';
  }
}
