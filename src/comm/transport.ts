/**
 * One process's data-plane endpoint: a bound ZeroMQ Pull socket that every peer pushes to, and lazily one
 * Push socket per peer endpoint. Messages are two frames: a msgpack header and the raw payload bytes.
 */
import { Pull, Push } from 'zeromq';
import { CommAbortedError, CommError } from './errors.ts';
import { type Header, mailboxKey, packHeader, unpackHeader } from './header.ts';
import { type Delivery, Mailbox, type Waiting } from './mailbox.ts';

const EMPTY = Buffer.alloc(0);

/** A Push socket to one peer, with its sends chained: zeromq.js allows one `send` in flight per socket. */
class PeerLink {
  readonly socket = new Push({ linger: 0 });
  #tail: Promise<unknown> = Promise.resolve();

  constructor(endpoint: string) {
    this.socket.connect(endpoint);
  }

  send(frames: Buffer[]): Promise<void> {
    const sent = this.#tail.then(() => this.socket.send(frames));
    // The chain continues past a failed send; the failure reaches the caller through `sent`.
    this.#tail = sent.catch(() => {});
    return sent;
  }
}

export class Transport {
  readonly #pull: Pull;
  readonly #links = new Map<string, PeerLink>();
  readonly #mailbox = new Mailbox();
  #nextReceipt = 0;
  #closed = false;
  readonly #loop: Promise<void>;

  private constructor(
    pull: Pull,
    /** The resolved endpoint peers connect to (a wildcard port replaced by the port bound). */
    readonly endpoint: string,
  ) {
    this.#pull = pull;
    this.#loop = this.#receiveLoop();
  }

  /** Binds `endpoint` (`ipc:///tmp/x.sock`, `tcp://host:port` or `tcp://host:*`). */
  static async bind(endpoint: string): Promise<Transport> {
    const pull = new Pull({ linger: 0 });
    await pull.bind(endpoint);
    return new Transport(pull, pull.lastEndpoint ?? endpoint);
  }

  /**
   * Queues a message to `to`. The payload is not copied: the caller must not write to it until the peer has it
   * (the collectives order their writes after later receives; `sendWithReceipt` waits for the peer).
   * Resolves once ZeroMQ has taken the message, which is before it is on the wire.
   */
  send(to: string, header: Header, payload: Uint8Array = EMPTY): Promise<void> {
    if (this.#closed) return Promise.reject(new CommAbortedError('transport is closed'));
    let link = this.#links.get(to);
    if (!link) {
      link = new PeerLink(to);
      this.#links.set(to, link);
    }
    return link.send([packHeader(header), asBuffer(payload)]);
  }

  /** Sends and waits until the peer's transport has received the message (so the payload may be reused). */
  sendWithReceipt(to: string, header: Header, payload: Uint8Array): Waiting {
    const id = this.#nextReceipt++;
    const receipt = this.expect({ kind: 'receipt', group: '', seq: id, step: 0, seg: 0, src: 0 });
    this.send(to, { ...header, receipt: { to: this.endpoint, id } }, payload).catch((e: Error) =>
      receipt.cancel(e),
    );
    return receipt;
  }

  /** Waits for the message with this key (see `mailboxKey`); it may already have arrived. */
  expect(key: Pick<Header, 'kind' | 'group' | 'seq' | 'step' | 'seg' | 'src'>): Waiting {
    if (this.#closed) {
      const promise = Promise.reject(new CommAbortedError('transport is closed'));
      promise.catch(() => {});
      return { promise, cancel: () => {} };
    }
    return this.#mailbox.take(mailboxKey(key));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#mailbox.close(new CommAbortedError('transport is closed'));
    for (const link of this.#links.values()) link.socket.close();
    this.#pull.close();
    await this.#loop;
  }

  async #receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.#pull.receive();
      } catch (e) {
        // Closing ends the loop; anything else leaves every waiter with the reason instead of a silent hang.
        if (!this.#closed)
          this.#mailbox.close(new CommError(`data-plane receive failed: ${String(e)}`, { cause: e }));
        return;
      }
      this.#deliver(frames);
    }
  }

  #deliver(frames: Buffer[]): void {
    let header: Header;
    try {
      header = unpackHeader(frames[0]);
    } catch {
      return; // not ours (a stray connection): ignore rather than kill the loop
    }
    const delivery: Delivery = { header, payload: frames[1] ?? EMPTY };
    if (header.receipt) {
      const { to, id } = header.receipt;
      const ack: Header = {
        kind: 'receipt',
        group: '',
        op: header.op,
        seq: id,
        step: 0,
        seg: 0,
        src: 0,
        dtype: 'fp32',
      };
      // A lost receipt only delays the sender until its own timeout: nothing to do here if the send fails.
      this.send(to, ack).catch(() => {});
    }
    this.#mailbox.put(mailboxKey(header), delivery);
  }
}

/** A Buffer over the same bytes (ZeroMQ takes Buffers without copying them). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
