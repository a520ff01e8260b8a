/**
 * One process's data-plane endpoint. Every ordered pair of processes has a link of its own: this process binds
 * one Pull socket per peer (the endpoint that peer, and only that peer, pushes to) and pushes to each peer's
 * socket for it. The sender of a frame is therefore the peer whose socket it arrived on — one admitted by its
 * CURVE key alone across nodes (`curve.ts`), a socket in the job's private directory on one node — and a frame
 * claiming another sender is a protocol error naming the peer it came from. Peers are reached only through the
 * table the rendezvous gave (`connect`): no socket is opened because of what a frame says. Frames that no receive
 * expects are bounded per peer (`Mailbox`). Messages are two frames: a msgpack header and the raw payload bytes.
 */
import { chmodSync } from 'node:fs';
import { Pull, Push } from 'zeromq';
import { admitPeers, type CurveKeys, curveClient, curveServer, forgetPeers, startZap } from './curve.ts';
import { CommAbortedError, CommError, CommProtocolError } from './errors.ts';
import { type Header, mailboxKey, packHeader, unpackHeader } from './header.ts';
import { type Delivery, Mailbox, type Waiting } from './mailbox.ts';

const EMPTY = Buffer.alloc(0);

/** A Push socket to one peer, with its sends chained: zeromq.js allows one `send` in flight per socket. */
class PeerLink {
  readonly socket: Push;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(endpoint: string, curve: { keys: CurveKeys; server: string } | undefined) {
    this.socket = new Push({ linger: 0, ...(curve ? curveClient(curve.keys, curve.server) : {}) });
    this.socket.connect(endpoint);
  }

  send(frames: Buffer[]): Promise<void> {
    const sent = this.#tail.then(() => this.socket.send(frames));
    // The chain continues past a failed send; the failure reaches the caller through `sent`.
    this.#tail = sent.catch(() => {});
    return sent;
  }
}

/** Where a peer is: the endpoint it bound for this process, and its CURVE public key when links are encrypted. */
export interface PeerAddress {
  readonly endpoint: string;
  readonly publicKey?: string;
}

export interface TransportOptions {
  /** This process's rank in the world, and the world's size: one receive socket per rank. */
  readonly rank: number;
  readonly world: number;
  /** The endpoint to bind for frames from `source` (`ipc:///dir/x.sock`, `tcp://host:port`, `tcp://host:*`). */
  readonly bind: (source: number) => string;
  /** Encrypt and authenticate every link with these keys (CURVE); plain when absent. */
  readonly curve?: CurveKeys;
  /** Bytes (payloads) that may wait per peer for a receive that expects them; default `WINDOW_BYTES`. */
  readonly windowBytes?: number;
}

/**
 * Bytes one peer may have waiting for receives: a ring peer runs at most a step ahead (a chunk of the largest
 * tensor over the world size), a pipeline stage a few micro-batches; beyond this it is not a peer of this job.
 */
export const WINDOW_BYTES = 512 << 20;

export class Transport {
  /** This process's world rank. */
  readonly rank: number;
  /** The endpoint each rank pushes to, by rank: what the rendezvous hands to the peers. */
  readonly endpoints: readonly string[];
  readonly #pulls: readonly Pull[];
  readonly #curve: CurveKeys | undefined;
  #peers: readonly PeerAddress[] | undefined;
  readonly #links = new Map<number, PeerLink>();
  readonly #mailbox: Mailbox;
  #nextReceipt = 0;
  #closed = false;
  readonly #loops: Promise<void>[];

  private constructor(o: TransportOptions, pulls: Pull[]) {
    this.rank = o.rank;
    this.#pulls = pulls;
    this.#curve = o.curve;
    this.endpoints = pulls.map((p, source) => p.lastEndpoint ?? o.bind(source));
    this.#mailbox = new Mailbox(o.world, o.windowBytes ?? WINDOW_BYTES);
    this.#loops = pulls.map((p, source) => this.#receiveLoop(p, source));
  }

  /** Binds one receive socket per rank of the world (see the module comment). */
  static async bind(o: TransportOptions): Promise<Transport> {
    const pulls: Pull[] = [];
    if (o.curve) await startZap();
    try {
      for (let source = 0; source < o.world; source++) {
        const pull = new Pull({ linger: 0, ...(o.curve ? curveServer(o.curve, source) : {}) });
        pulls.push(pull);
        const endpoint = o.bind(source);
        await pull.bind(endpoint);
        // Only this user may connect to a socket on this machine, whatever the umask.
        if (endpoint.startsWith('ipc://')) chmodSync(endpoint.slice('ipc://'.length), 0o600);
      }
    } catch (err) {
      for (const p of pulls) p.close();
      throw err;
    }
    return new Transport(o, pulls);
  }

  /** The peer table, by rank (the rendezvous's reply): where each peer receives from this process. */
  connect(peers: readonly PeerAddress[]): void {
    if (peers.length !== this.#pulls.length) {
      throw new RangeError(`the peer table has ${peers.length} ranks, the world ${this.#pulls.length}`);
    }
    if (this.#curve) {
      const keys = peers.map((p) => p.publicKey);
      if (keys.some((k) => k === undefined))
        throw new RangeError('encrypted links need every peer’s public key');
      admitPeers(this.#curve, keys as string[]);
    }
    this.#peers = peers;
  }

  /**
   * Queues a message to rank `to`. The payload is not copied: the caller must not write to it until the peer has
   * it (the collectives order their writes after later receives; `sendWithReceipt` waits for the peer).
   * Resolves once ZeroMQ has taken the message, which is before it is on the wire.
   */
  send(to: number, header: Header, payload: Uint8Array = EMPTY): Promise<void> {
    if (this.#closed) return Promise.reject(new CommAbortedError('transport is closed'));
    let link = this.#links.get(to);
    if (!link) {
      const peer = this.#peers?.[to];
      if (!peer) return Promise.reject(new RangeError(`no peer ${to} in the peer table`));
      const curve = this.#curve ? { keys: this.#curve, server: peer.publicKey as string } : undefined;
      link = new PeerLink(peer.endpoint, curve);
      this.#links.set(to, link);
    }
    return link.send([packHeader({ ...header, src: this.rank }), asBuffer(payload)]);
  }

  /** Sends and waits until the peer's transport has received the message (so the payload may be reused). */
  sendWithReceipt(to: number, header: Header, payload: Uint8Array): Waiting {
    const id = this.#nextReceipt++;
    const receipt = this.expect({ kind: 'receipt', group: '', seq: id, step: 0, seg: 0, src: to });
    this.send(to, { ...header, receipt: id }, payload).catch((e: Error) => receipt.cancel(e));
    return receipt;
  }

  /** Waits for the message with this key (see `mailboxKey`; `src` is the sender's world rank). */
  expect(key: Pick<Header, 'kind' | 'group' | 'seq' | 'step' | 'seg' | 'src'>): Waiting {
    return this.#mailbox.take(mailboxKey(key));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#mailbox.close(new CommAbortedError('transport is closed'));
    for (const link of this.#links.values()) link.socket.close();
    for (const p of this.#pulls) p.close();
    if (this.#curve) forgetPeers(this.#curve, this.#pulls.length);
    await Promise.all(this.#loops);
  }

  async #receiveLoop(pull: Pull, source: number): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await pull.receive();
      } catch (e) {
        // Closing ends the loop; anything else leaves every waiter with the reason instead of a silent hang.
        if (!this.#closed)
          this.#mailbox.close(new CommError(`data-plane receive failed: ${String(e)}`, { cause: e }));
        return;
      }
      try {
        this.#deliver(frames, source);
      } catch (err) {
        // A peer that breaks the protocol fails the job, named by the socket it came in on, and is heard no more.
        this.#mailbox.close(err as Error);
        pull.close();
        return;
      }
    }
  }

  #deliver(frames: Buffer[], source: number): void {
    let header: Header;
    try {
      header = unpackHeader(frames[0]);
    } catch (err) {
      throw new CommProtocolError(
        source,
        `a frame that is not a kd-launch header (${(err as Error).message})`,
      );
    }
    if (header.src !== source) {
      throw new CommProtocolError(source, `a frame claiming to come from rank ${header.src}`);
    }
    const delivery: Delivery = { header, payload: frames[1] ?? EMPTY };
    if (header.receipt !== undefined) {
      const ack: Header = {
        kind: 'receipt',
        group: '',
        op: header.op,
        seq: header.receipt,
        step: 0,
        seg: 0,
        src: this.rank,
        dtype: 'fp32',
      };
      // A lost receipt only delays the sender until its own timeout: nothing to do here if the send fails.
      this.send(source, ack).catch(() => {});
    }
    this.#mailbox.put(mailboxKey(header), delivery, source);
  }
}

/** A Buffer over the same bytes (ZeroMQ takes Buffers without copying them). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
