/**
 * Where received messages meet their receivers. The transport's receive loop `put`s every message under its
 * key; a receiver `take`s a key. Whichever comes first waits for the other. What waits for a receiver is bounded
 * per sender (`window` payload bytes): a peer that sends more than a receive will ever take is not a peer of
 * this job, and is named in the error instead of growing the process without end.
 */
import { CommProtocolError } from './errors.ts';
import type { Header } from './header.ts';

export interface Delivery {
  header: Header;
  /** The raw payload frame (owned by the receiver: it may be written to and forwarded). */
  payload: Buffer;
  /**
   * Set when the payload is a view of a shared-memory ring: gives its bytes back to the sender. The receiver
   * calls it once, when done with the payload, and must not touch the payload after.
   */
  release?: () => void;
}

export interface Waiting {
  promise: Promise<Delivery>;
  /** Stops waiting: the promise rejects with `reason` (no-op once delivered). */
  cancel(reason: Error): void;
}

interface Waiter {
  resolve(d: Delivery): void;
  reject(e: Error): void;
}

/** What an unexpected message costs its sender's window besides its payload (its key and header). */
const MESSAGE_COST = 256;

export class Mailbox {
  readonly #arrived = new Map<string, { delivery: Delivery; from: number }>();
  readonly #waiting = new Map<string, Waiter>();
  /** Per sender: bytes of its messages no receive has taken yet. */
  readonly #held: number[];
  /** Set by `close`: every later receive fails with it at once. */
  #closed: Error | undefined;

  constructor(
    senders: number,
    readonly window: number,
  ) {
    this.#held = new Array<number>(senders).fill(0);
  }

  /** Hands `delivery` to its receiver, or keeps it; throws when `from` would hold more than the window. */
  put(key: string, delivery: Delivery, from: number): void {
    const waiter = this.#waiting.get(key);
    if (waiter) {
      this.#waiting.delete(key);
      waiter.resolve(delivery);
      return;
    }
    if (this.#arrived.has(key)) throw new CommProtocolError(from, `a second message ${key}`);
    const held = this.#held[from] + delivery.payload.byteLength + MESSAGE_COST;
    if (held > this.window) {
      throw new CommProtocolError(
        from,
        `more than ${this.window} bytes that no receive expects (the window per peer)`,
      );
    }
    this.#held[from] = held;
    this.#arrived.set(key, { delivery, from });
  }

  take(key: string): Waiting {
    if (this.#closed) {
      const promise = Promise.reject(this.#closed);
      promise.catch(() => {});
      return { promise, cancel: () => {} };
    }
    const early = this.#arrived.get(key);
    if (early) {
      this.#arrived.delete(key);
      this.#held[early.from] -= early.delivery.payload.byteLength + MESSAGE_COST;
      return { promise: Promise.resolve(early.delivery), cancel: () => {} };
    }
    if (this.#waiting.has(key)) throw new Error(`two receivers wait for the same message ${key}`);
    let waiter!: Waiter;
    const promise = new Promise<Delivery>((resolve, reject) => {
      waiter = { resolve, reject };
    });
    this.#waiting.set(key, waiter);
    return {
      promise,
      cancel: (reason) => {
        if (this.#waiting.get(key) !== waiter) return;
        this.#waiting.delete(key);
        waiter.reject(reason);
      },
    };
  }

  /**
   * Rejects every waiter, and every receive from now on, with `reason`, and forgets every undelivered message (the
   * transport is closing, or a peer broke the protocol).
   */
  close(reason: Error): void {
    this.#closed ??= reason;
    for (const w of this.#waiting.values()) w.reject(reason);
    this.#waiting.clear();
    this.#arrived.clear();
    this.#held.fill(0);
  }
}
