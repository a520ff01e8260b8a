/**
 * One process's data-plane endpoint. Every ordered pair of processes has a link of its own: this process binds
 * one Pull socket per peer (the endpoint that peer, and only that peer, pushes to) and pushes to each peer's
 * socket for it. The sender of a frame is therefore the peer whose socket it arrived on — one admitted by its
 * CURVE key alone across nodes (`curve.ts`), a socket in the job's private directory on one node — and a frame
 * claiming another sender is a protocol error naming the peer it came from. Peers are reached only through the
 * table the rendezvous gave (`connect`): no socket is opened because of what a frame says. Frames that no receive
 * expects are bounded per peer (`Mailbox`). Messages are two frames: a msgpack header and the raw payload bytes.
 *
 * Between two processes of one node a message goes through the pair's shared-memory ring instead
 * (`shm-ring.ts`), header and payload, whenever it fits there; one that does not travels on the link. Nothing
 * orders the two paths against each other, and nothing needs to: receives are matched by key (`Mailbox`).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Pull, Push } from 'zeromq';
import { admitPeers, type CurveKeys, curveClient, curveServer, forgetPeers, startZap } from './curve.ts';
import { CommAbortedError, CommError, CommProtocolError } from './errors.ts';
import { type Header, mailboxKey, packHeader, unpackHeader } from './header.ts';
import { type Delivery, Mailbox, type Waiting } from './mailbox.ts';
import { type ShmBinding, ShmReceiver, ShmSender } from './shm-ring.ts';

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
  /** The ring file this peer made for frames from this process, when both are on one node (`shmRings`). */
  readonly shmRing?: string;
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
  /**
   * Shared memory for peers on this node: the node's private directory for ring files (on a tmpfs) and the
   * binding that maps them. Absent: every payload goes over ZeroMQ.
   */
  readonly shm?: ShmOptions;
}

export interface ShmOptions {
  readonly dir: string;
  readonly binding: ShmBinding;
  /** Data bytes of each ring this process receives on (default `RING_DATA_BYTES`). */
  readonly ringBytes?: number;
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
  readonly #shm: TransportOptions['shm'];
  /** By source rank: the ring this process made for frames from it (none for itself). */
  readonly #shmIn: readonly (ShmReceiver | undefined)[];
  /** By destination rank: the peer's ring for frames from this process, when it is on this node. */
  readonly #shmOut = new Map<number, ShmSender>();
  /**
   * Payload bytes this process sent, by the path they took; `overflow` counts those of the ZeroMQ bytes that
   * were for a ring with no room left.
   */
  readonly bytesSent = { shm: 0, zmq: 0, overflow: 0 };
  /**
   * Whether this process's payloads to peers on its node go through their rings (set once connected, when
   * there are such peers). Turning it off sends them over ZeroMQ; receivers take either.
   */
  sharedMemory = false;
  readonly #mailbox: Mailbox;
  #nextReceipt = 0;
  #closed = false;
  readonly #loops: Promise<void>[];

  private constructor(o: TransportOptions, pulls: Pull[], shmIn: (ShmReceiver | undefined)[]) {
    this.rank = o.rank;
    this.#shm = o.shm;
    this.#shmIn = shmIn;
    this.#pulls = pulls;
    this.#curve = o.curve;
    this.endpoints = pulls.map((p, source) => p.lastEndpoint ?? o.bind(source));
    this.#mailbox = new Mailbox(o.world, o.windowBytes ?? WINDOW_BYTES);
    this.#loops = pulls.map((p, source) => this.#receiveLoop(p, source));
  }

  /**
   * Binds one receive socket per rank of the world (see the module comment), and with `shm` makes one ring per
   * other rank (sparse files: a ring of a peer on another node costs an inode until the directory goes).
   */
  static async bind(o: TransportOptions): Promise<Transport> {
    const pulls: Pull[] = [];
    const shmIn: (ShmReceiver | undefined)[] = [];
    // A ring may ring before the constructor has run; there is nothing to read before a peer table anyway.
    let transport: Transport | undefined;
    if (o.curve) await startZap();
    try {
      if (o.shm) {
        const { dir, binding, ringBytes } = o.shm;
        const name = randomBytes(9).toString('hex');
        for (let source = 0; source < o.world; source++) {
          const path = join(dir, `${name}-${o.rank}-from-${source}`);
          const onRing = () => {
            if (transport) transport.#drain(source);
          };
          shmIn.push(source === o.rank ? undefined : new ShmReceiver(binding, path, onRing, ringBytes));
        }
      }
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
      for (const ring of shmIn) ring?.close();
      throw err;
    }
    transport = new Transport(o, pulls, shmIn);
    return transport;
  }

  /** By source rank, the ring file each peer on this node is to write its frames for this process into ('' for none). */
  get shmRings(): string[] {
    return this.endpoints.map((_, source) => this.#shmIn[source]?.path ?? '');
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
    for (const [to, peer] of peers.entries()) {
      if (!peer.shmRing || to === this.rank || !this.#shm) continue;
      // A path the rendezvous relayed: only a file in this node's own ring directory is opened.
      if (dirname(peer.shmRing) !== this.#shm.dir || basename(peer.shmRing).startsWith('.'))
        throw new RangeError(
          `rank ${to}'s ring ${peer.shmRing} is not in this node's directory ${this.#shm.dir}`,
        );
      this.#shmOut.set(to, new ShmSender(this.#shm.binding, peer.shmRing));
    }
    this.sharedMemory = this.#shmOut.size > 0;
    this.#peers = peers;
  }

  /** Which peers this process reaches through shared memory (by rank). */
  sharesMemoryWith(rank: number): boolean {
    return this.#shmOut.has(rank);
  }

  /**
   * Queues a message to rank `to`. It goes into the pair's shared-memory ring when there is one with room (the
   * payload copied at once), else over ZeroMQ without a copy: the caller must not write to the payload until the
   * peer has it (the collectives order their writes after later receives; `sendWithReceipt` waits for the peer).
   * A payload that is itself a view of a ring this process receives on is copied first: it is released as soon
   * as the caller is done with it. Resolves once the message is queued, which is before it is on the wire.
   */
  send(to: number, header: Header, payload: Uint8Array = EMPTY): Promise<void> {
    if (this.#copyIntoRing(to, header, payload)) return Promise.resolve();
    return this.#send(to, header, payload);
  }

  /**
   * Sends and waits until the payload may be reused: at once when it went into shared memory, else when the
   * peer's transport has received the message.
   */
  sendWithReceipt(to: number, header: Header, payload: Uint8Array): Waiting {
    if (this.#copyIntoRing(to, header, payload))
      return { promise: Promise.resolve({ header, payload: EMPTY }), cancel: () => {} };
    const id = this.#nextReceipt++;
    const receipt = this.expect({ kind: 'receipt', group: '', seq: id, step: 0, seg: 0, src: to });
    this.#send(to, { ...header, receipt: id }, payload).catch((e: Error) => receipt.cancel(e));
    return receipt;
  }

  /**
   * Queues a message whose payload of `bytes` `fill` writes: straight into the pair's ring when there is one with
   * room (no copy at all), else into a buffer of its own that goes over ZeroMQ.
   */
  sendFilled(to: number, header: Header, bytes: number, fill: (payload: Uint8Array) => void): Promise<void> {
    if (this.#fillRing(to, header, bytes, fill)) return Promise.resolve();
    const payload = Buffer.allocUnsafeSlow(bytes);
    fill(payload);
    return this.#send(to, header, payload);
  }

  #copyIntoRing(to: number, header: Header, payload: Uint8Array): boolean {
    return this.#fillRing(to, header, payload.byteLength, (view) => view.set(payload));
  }

  /**
   * Writes the message into the ring to `to` (`fill` writes the payload there) and publishes it; false when it
   * goes over ZeroMQ: no ring to that peer now, or no room in it.
   */
  #fillRing(to: number, header: Header, bytes: number, fill: (payload: Uint8Array) => void): boolean {
    const ring = this.sharedMemory && !this.#closed ? this.#shmOut.get(to) : undefined;
    if (!ring) return false;
    const view = ring.reserve(packHeader({ ...header, src: this.rank }), bytes);
    if (!view) {
      this.bytesSent.overflow += bytes;
      return false;
    }
    try {
      fill(view);
    } catch (err) {
      ring.unreserve();
      throw err;
    }
    ring.publish();
    this.bytesSent.shm += bytes;
    return true;
  }

  #send(to: number, header: Header, payload: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(new CommAbortedError('transport is closed'));
    let link = this.#links.get(to);
    if (!link) {
      const peer = this.#peers?.[to];
      if (!peer) return Promise.reject(new RangeError(`no peer ${to} in the peer table`));
      const curve = this.#curve ? { keys: this.#curve, server: peer.publicKey as string } : undefined;
      link = new PeerLink(peer.endpoint, curve);
      this.#links.set(to, link);
    }
    this.bytesSent.zmq += payload.byteLength;
    const own = this.#shmIn.some((ring) => ring?.buffer === payload.buffer);
    return link.send([
      packHeader({ ...header, src: this.rank }),
      own ? Buffer.from(payload) : asBuffer(payload),
    ]);
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
    for (const ring of this.#shmIn) ring?.close();
    for (const ring of this.#shmOut.values()) ring.close();
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
    this.#accept({ header: this.#headerOf(frames[0], source), payload: frames[1] ?? EMPTY }, source);
  }

  /**
   * Reads every message the ring from `source` holds (its doorbell rang). A ring that breaks the protocol fails
   * the job, named by the peer whose ring it is, and is read no more.
   */
  #drain(source: number): void {
    const ring = this.#shmIn[source];
    if (!ring || this.#closed) return;
    try {
      for (let m = ring.next(); m; m = ring.next()) {
        // The sender opened the ring and its doorbell before its first message: the files have done their job.
        ring.unlink();
        const header = this.#headerOf(m.header, source);
        // A message without a payload (a receipt, a barrier's) holds nothing: its block goes back at once.
        const empty = m.payload.byteLength === 0;
        if (empty) m.release();
        this.#accept(
          empty ? { header, payload: EMPTY } : { header, payload: m.payload, release: m.release },
          source,
        );
      }
    } catch (err) {
      this.#mailbox.close(
        err instanceof CommProtocolError ? err : new CommProtocolError(source, (err as Error).message),
      );
      ring.close();
    }
  }

  /** The header of a message that came from `source`, on either path; throws a protocol error naming it. */
  #headerOf(bytes: Buffer, source: number): Header {
    let header: Header;
    try {
      header = unpackHeader(bytes);
    } catch (err) {
      throw new CommProtocolError(
        source,
        `a frame that is not a kd-launch header (${(err as Error).message})`,
      );
    }
    if (header.src !== source) {
      throw new CommProtocolError(source, `a frame claiming to come from rank ${header.src}`);
    }
    return header;
  }

  /** Hands a message to its receive (acknowledging it first when its sender waits for a receipt). */
  #accept(delivery: Delivery, source: number): void {
    const { header } = delivery;
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
