/** Errors of the data plane. Every message names the collective (op, sequence number, group) it came from. */

/** Base class: anything the data plane rejects with. */
export class CommError extends Error {
  override name = 'CommError';
}

/** A collective did not finish within the group's `timeoutMs`; `peer` is the rank it was waiting on. */
export class CommTimeoutError extends CommError {
  override name = 'CommTimeoutError';
  constructor(
    message: string,
    readonly peer: number | undefined,
  ) {
    super(message);
  }
}

/** The group was aborted (`pg.abort(reason)`) or closed; `cause` is the reason given. */
export class CommAbortedError extends CommError {
  override name = 'CommAbortedError';
}

/** Ranks called different collectives at the same sequence number: a program bug, not a network fault. */
export class CommMismatchError extends CommError {
  override name = 'CommMismatchError';
}

/**
 * A peer broke the data-plane protocol: a frame that is no kd-launch header, one claiming another sender, or more
 * unexpected bytes than the window. `peer` is the world rank whose link it came in on (authenticated across nodes).
 */
export class CommProtocolError extends CommError {
  override name = 'CommProtocolError';
  constructor(
    readonly peer: number,
    what: string,
  ) {
    super(`data-plane protocol violation on rank ${peer}'s link: ${what}`);
  }
}
