/**
 * The life of one collective (or point-to-point) call: its deadline, the receives and sends it is blocked on,
 * and the one way out when it fails — timeout, abort, or a failing step — which cancels everything it waits on.
 */
import { CommTimeoutError } from './errors.ts';
import type { Delivery, Waiting } from './mailbox.ts';

interface Blocker {
  peer: number;
  kind: 'recv' | 'send';
  cancel(reason: Error): void;
}

export class OpScope {
  readonly #blockers = new Set<Blocker>();
  readonly #failed: Promise<never>;
  #reject!: (e: Error) => void;
  #failure: Error | undefined;

  constructor(
    /** How errors name the call, e.g. `allReduce #12 (group world)`. */
    readonly label: string,
    readonly timeoutMs: number,
  ) {
    this.#failed = new Promise<never>((_, reject) => {
      this.#reject = reject;
    });
    this.#failed.catch(() => {}); // observed through `run`; never an unhandled rejection
  }

  /** Runs `body` until it settles or the scope fails, whichever is first. */
  async run<T>(body: () => Promise<T>): Promise<T> {
    const timer = setTimeout(() => this.#timeout(), this.timeoutMs);
    const work = body();
    work.catch((e: Error) => this.fail(e)); // a failing step stops the others
    try {
      return await Promise.race([work, this.#failed]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for a message from `peer`, giving up when the scope fails. */
  receive(waiting: Waiting, peer: number): Promise<Delivery> {
    return this.#block(waiting.promise, peer, 'recv', waiting.cancel);
  }

  /** Tracks a send to `peer` (it can block when the peer stops reading). */
  send(sent: Promise<void>, peer: number): Promise<void> {
    return this.#block(sent, peer, 'send', () => {});
  }

  /** Fails the call with `error` (first failure wins) and releases everything it waits on. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#reject(error);
    for (const b of this.#blockers) b.cancel(error);
    this.#blockers.clear();
  }

  #block<T>(
    promise: Promise<T>,
    peer: number,
    kind: Blocker['kind'],
    cancel: (e: Error) => void,
  ): Promise<T> {
    if (this.#failure) {
      cancel(this.#failure);
      return this.#failed;
    }
    const blocker: Blocker = { peer, kind, cancel };
    this.#blockers.add(blocker);
    return promise.finally(() => this.#blockers.delete(blocker));
  }

  #timeout(): void {
    // Name the peer of the oldest pending receive: that is the rank holding everyone up.
    const blockers = [...this.#blockers];
    const peer = (blockers.find((b) => b.kind === 'recv') ?? blockers[0])?.peer;
    const waiting = peer === undefined ? '' : ` waiting for rank ${peer}`;
    this.fail(
      new CommTimeoutError(`${this.label} timed out after ${this.timeoutMs / 1000} s${waiting}`, peer),
    );
  }
}
