/**
 * Where received messages meet their receivers. The transport's receive loop `put`s every message under its
 * key; a receiver `take`s a key. Whichever comes first waits for the other.
 */
import type { Header } from './header.ts';

export interface Delivery {
  header: Header;
  /** The raw payload frame (owned by the receiver: it may be written to and forwarded). */
  payload: Buffer;
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

export class Mailbox {
  readonly #arrived = new Map<string, Delivery>();
  readonly #waiting = new Map<string, Waiter>();

  put(key: string, delivery: Delivery): void {
    const waiter = this.#waiting.get(key);
    if (waiter) {
      this.#waiting.delete(key);
      waiter.resolve(delivery);
    } else {
      this.#arrived.set(key, delivery);
    }
  }

  take(key: string): Waiting {
    const early = this.#arrived.get(key);
    if (early) {
      this.#arrived.delete(key);
      return { promise: Promise.resolve(early), cancel: () => {} };
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

  /** Rejects every waiter and forgets every undelivered message (the transport is closing). */
  close(reason: Error): void {
    for (const w of this.#waiting.values()) w.reject(reason);
    this.#waiting.clear();
    this.#arrived.clear();
  }
}
