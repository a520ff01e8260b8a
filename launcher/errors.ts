import type { Failure } from './events.ts';

/** A bad flag, option or environment for the launcher: the CLI prints its message as one line. */
export class LaunchError extends Error {
  override name = 'LaunchError';
}

/** The error `result` rejects with when a worker failed or the job was aborted. */
export class JobFailedError extends Error {
  constructor(
    message: string,
    readonly failure: Failure | undefined,
  ) {
    super(message);
    this.name = 'JobFailedError';
  }
}
