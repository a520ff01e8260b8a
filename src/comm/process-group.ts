/**
 * `ProcessGroup`: the collectives of `types.ts` over ZeroMQ, for a set of ranks sharing one `Transport`.
 * Bookkeeping lives here (sequence numbers, group ids, timeouts, abort, byte counts); the algorithms live in
 * `ring.ts`.
 */
import { CommAbortedError, CommMismatchError } from './errors.ts';
import type { FlightRecorder } from './flight-recorder.ts';
import type { Header } from './header.ts';
import { OpScope } from './op-scope.ts';
import { checkReduceOp } from './reduce-op.ts';
import { allGatherInto, allReduceRing, broadcastChain, type RingLink, reduceScatter } from './ring.ts';
import { Transport } from './transport.ts';
import {
  asRank,
  type ByteCounts,
  type CollectiveInfo,
  type CollectiveOptions,
  type Collectives,
  type Rank,
  type ReduceOptions,
  shardRange,
  type WireDtype,
} from './types.ts';
import { wireCodec } from './wire-dtype.ts';

/**
 * Wire bytes per segment. Large enough that ZeroMQ's per-message cost is small beside the copy into the
 * socket, small enough that a ring keeps several segments in flight (measured from 0.5 to 8 MiB:
 * bench/RESULTS.md, "All-reduce over ZeroMQ").
 */
export const DEFAULT_SEGMENT_BYTES = 4 << 20;

/**
 * Point-to-point payloads up to this size are copied and sent at once; larger ones go without a copy and
 * `send` resolves when the peer has received them (MPI's eager and rendezvous protocols).
 */
export const EAGER_SEND_BYTES = 256 << 10;

export interface ProcessGroupOptions {
  /**
   * This process's data-plane endpoint, connected to its peers: its rank and world are the group's. The group
   * made by `create` owns it: `close()` closes it.
   */
  transport: Transport;
  /** How long one collective (or send/recv) may take before it fails with a `CommTimeoutError`. */
  timeoutMs: number;
  /** Wire bytes per ring segment (default `DEFAULT_SEGMENT_BYTES`). */
  segmentBytes?: number;
  /** Where every call of this group and the groups made from it is recorded (the watchdog reads it). */
  recorder?: FlightRecorder;
}

/** What the groups of one transport share. */
interface Fabric {
  transport: Transport;
  timeoutMs: number;
  segmentBytes: number;
  recorder: FlightRecorder | undefined;
  /** How many groups over each world-rank list this process has made: the next one's id suffix. */
  created: Map<string, number>;
}

export class ProcessGroup implements Collectives {
  readonly rank: Rank;
  readonly size: number;
  /** Same on every member, different for every group: `world`, or `[0,2]#0` for the first group over 0 and 2. */
  readonly id: string;
  /** The call this group is in, or was last in: the heartbeat names it when a peer dies. */
  lastCollective: CollectiveInfo | undefined;
  /** Payload bytes this process sent, per op name. */
  readonly bytesSent: ByteCounts = {};

  readonly #fabric: Fabric;
  /** Group rank → world rank. */
  readonly #worldRanks: readonly number[];
  readonly #owner: boolean;
  readonly #scopes = new Set<OpScope>();
  readonly #children: ProcessGroup[] = [];
  readonly #p2pSent = new Map<string, number>();
  readonly #p2pReceived = new Map<string, number>();
  #seq = 0;
  #stopped: Error | undefined;

  private constructor(
    fabric: Fabric,
    id: string,
    worldRanks: readonly number[],
    rank: number,
    owner: boolean,
  ) {
    this.#fabric = fabric;
    this.id = id;
    this.#worldRanks = worldRanks;
    this.size = worldRanks.length;
    this.rank = asRank(rank, this.size);
    this.#owner = owner;
  }

  static create(opts: ProcessGroupOptions): ProcessGroup {
    const { transport, timeoutMs } = opts;
    const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
    if (!Number.isInteger(segmentBytes) || segmentBytes < 4)
      throw new RangeError(`segmentBytes must be ≥ 4, got ${segmentBytes}`);
    const fabric: Fabric = {
      transport,
      timeoutMs,
      segmentBytes,
      recorder: opts.recorder,
      created: new Map(),
    };
    return new ProcessGroup(
      fabric,
      'world',
      transport.endpoints.map((_, r) => r),
      transport.rank,
      true,
    );
  }
  /** A world of one: this process alone, over a loopback socket (single-process benchmarks and tools). */
  static async alone(timeoutMs = 60_000): Promise<ProcessGroup> {
    const transport = await Transport.bind({ rank: 0, world: 1, bind: () => 'tcp://127.0.0.1:*' });
    transport.connect([{ endpoint: transport.endpoints[0] }]);
    return ProcessGroup.create({ transport, timeoutMs });
  }

  /**
   * A group over `ranks` (ranks of this group; their order is the new ranks' order). Every member must call
   * it, in the same order relative to its other `newGroup` calls; non-members must not.
   */
  newGroup(ranks: readonly number[]): ProcessGroup {
    this.#throwIfStopped('newGroup');
    if (new Set(ranks).size !== ranks.length) throw new RangeError(`newGroup: ranks [${ranks}] repeat`);
    for (const r of ranks) asRank(r, this.size);
    const mine = ranks.indexOf(this.rank);
    if (mine < 0)
      throw new RangeError(`newGroup: rank ${this.rank} is not in [${ranks}]; only members create a group`);
    const worldRanks = ranks.map((r) => this.#worldRanks[r]);
    const list = worldRanks.join(',');
    const n = this.#fabric.created.get(list) ?? 0;
    this.#fabric.created.set(list, n + 1);
    const child = new ProcessGroup(this.#fabric, `[${list}]#${n}`, worldRanks, mine, false);
    this.#children.push(child);
    return child;
  }

  async allReduce(buf: Float32Array, opts: ReduceOptions = {}): Promise<Float32Array> {
    const op = checkReduceOp(opts.op ?? 'sum');
    return this.#collective('allReduce', opts.dtype, async (link) => {
      if (this.size > 1) await allReduceRing(link, op, buf);
      return buf;
    });
  }

  async reduceScatter(
    input: Float32Array,
    opts: ReduceOptions & { counts?: readonly number[]; out?: Float32Array } = {},
  ): Promise<Float32Array> {
    const op = checkReduceOp(opts.op ?? 'sum');
    const { counts, out } = opts;
    if (counts) {
      this.#checkCounts('reduceScatter', counts);
      const total = counts.reduce((a, b) => a + b, 0);
      if (total !== input.length) {
        throw new RangeError(
          `reduceScatter: counts [${counts}] sum to ${total}, the input has ${input.length}`,
        );
      }
    }
    let inPlace = false;
    if (out) {
      const range = shardRange(input.length, this.size, this.rank);
      const start = counts ? counts.slice(0, this.rank).reduce((a, b) => a + b, 0) : range.start;
      const own = counts ? counts[this.rank] : range.end - range.start;
      if (out.length !== own) {
        throw new RangeError(`reduceScatter: out has ${out.length} values, rank ${this.rank}'s shard ${own}`);
      }
      inPlace =
        out.buffer === input.buffer &&
        out.byteOffset === input.byteOffset + start * Float32Array.BYTES_PER_ELEMENT;
      if (!inPlace && overlaps(out, input)) {
        throw new RangeError(
          "reduceScatter: out overlaps the input other than as this rank's own shard of it",
        );
      }
    }
    return this.#collective('reduceScatter', opts.dtype, async (link) => {
      if (this.size > 1) return reduceScatter(link, op, input, counts, out, inPlace);
      if (!out) return input.slice();
      out.set(input);
      return out;
    });
  }

  #checkCounts(op: string, counts: readonly number[]): void {
    if (counts.length !== this.size || counts.some((c) => !Number.isInteger(c) || c < 0)) {
      throw new RangeError(`${op}: counts [${counts}] must be ${this.size} non-negative integers`);
    }
  }

  async allGather(
    shard: Float32Array,
    opts: CollectiveOptions & { counts?: readonly number[]; out?: Float32Array | (() => Float32Array) } = {},
  ): Promise<Float32Array> {
    const counts = opts.counts ?? new Array<number>(this.size).fill(shard.length);
    this.#checkCounts('allGather', counts);
    if (counts[this.rank] !== shard.length) {
      throw new RangeError(
        `allGather: rank ${this.rank}'s shard has ${shard.length} values, counts say ${counts[this.rank]}`,
      );
    }
    const total = counts.reduce((a, b) => a + b, 0);
    const given = opts.out;
    const fresh = given ? undefined : new Float32Array(total);
    const out = typeof given === 'function' ? given : () => given ?? (fresh as Float32Array);
    if (out().length !== total) {
      throw new RangeError(`allGather: out has ${out().length} values, counts sum to ${total}`);
    }
    return this.#collective('allGather', opts.dtype, async (link) => {
      if (this.size > 1) await allGatherInto(link, shard, counts, out);
      else out().set(shard);
      return out();
    });
  }

  async broadcast(buf: Float32Array, root: number, opts: CollectiveOptions = {}): Promise<Float32Array> {
    asRank(root, this.size);
    return this.#collective('broadcast', opts.dtype, async (link) => {
      if (this.size > 1) await broadcastChain(link, buf, root);
      return buf;
    });
  }

  async barrier(): Promise<void> {
    // A one-value all-reduce: nobody leaves before everybody has arrived.
    await this.#collective('barrier', 'fp32', async (link) => {
      if (this.size > 1) await allReduceRing(link, 'sum', new Float32Array(1));
    });
  }

  /** Resolves once `buf` may be reused: copied when small, received by the peer when large. */
  async send(buf: Float32Array, to: number, tag = 0, opts: CollectiveOptions = {}): Promise<void> {
    const peer = asRank(to, this.size);
    checkTag(tag);
    const codec = wireCodec(opts.dtype ?? 'fp32');
    const seq = nextOf(this.#p2pSent, `${peer}:${tag}`);
    return this.#pointToPoint('send', seq, peer, tag, async (scope, sent) => {
      const { transport } = this.#fabric;
      const header: Header = {
        kind: 'p2p',
        group: this.id,
        op: 'send',
        seq,
        step: tag,
        seg: 0,
        src: this.#world(this.rank),
        dtype: codec.dtype,
      };
      // fp32 goes as the caller's bytes (copied when eager, else held until the receipt); half is a fresh encoding.
      const wire =
        codec.dtype === 'fp32'
          ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
          : codec.encode(buf);
      sent(wire.byteLength);
      const to = this.#world(peer);
      if (wire.byteLength <= EAGER_SEND_BYTES) {
        await scope.send(transport.send(to, header, codec.dtype === 'fp32' ? wire.slice() : wire), peer);
      } else {
        await scope.receive(transport.sendWithReceipt(to, header, wire), peer);
      }
    });
  }

  /** Receives what `send(…, tag)` from `from` sent, in the sender's wire dtype, as fp32 values. */
  async recv(from: number, tag = 0): Promise<Float32Array> {
    const peer = asRank(from, this.size);
    checkTag(tag);
    const seq = nextOf(this.#p2pReceived, `${peer}:${tag}`);
    return this.#pointToPoint('recv', seq, peer, tag, async (scope) => {
      const key = { kind: 'p2p', group: this.id, seq, step: tag, seg: 0, src: this.#world(peer) } as const;
      const { header, payload, release } = await scope.receive(this.#fabric.transport.expect(key), peer);
      try {
        const codec = wireCodec(header.dtype);
        if (payload.byteLength % codec.bytesPerElement !== 0) {
          throw new CommMismatchError(
            `recv: rank ${peer} sent ${payload.byteLength} bytes, not ${codec.dtype} values`,
          );
        }
        // A received frame belongs to us: returned as is. Shared memory goes back to the sender: copied out.
        const view = release ? undefined : codec.viewFloat32(payload);
        if (view) return view;
        const out = new Float32Array(payload.byteLength / codec.bytesPerElement);
        codec.decodeInto(payload, out);
        return out;
      } finally {
        release?.();
      }
    });
  }

  /**
   * Fails every pending and future call of this group and of the groups made from it with a
   * `CommAbortedError` whose cause is `reason`. A worker whose peer died leaves its collective this way.
   */
  abort(reason: Error): void {
    this.#stopped ??= reason;
    for (const scope of this.#scopes) {
      scope.fail(new CommAbortedError(`${scope.label} aborted: ${reason.message}`, { cause: reason }));
    }
    for (const child of this.#children) child.abort(reason);
  }

  /** Aborts what is pending; the group made by `create` also closes the transport. */
  async close(): Promise<void> {
    this.abort(new CommAbortedError('process group closed'));
    if (this.#owner) await this.#fabric.transport.close();
  }

  /** The world rank (the transport's address) of group rank `rank`. */
  #world(rank: number): number {
    return this.#worldRanks[rank];
  }

  #throwIfStopped(what: string): void {
    if (this.#stopped)
      throw new CommAbortedError(`${what} (group ${this.id}) aborted: ${this.#stopped.message}`, {
        cause: this.#stopped,
      });
  }

  /**
   * Runs one call under a scope (deadline, abort) that is registered with the group while it runs, and in the
   * flight recorder: `peer` is the group rank it receives from. The body reports the bytes it sends with `sent`.
   */
  async #scoped<T>(
    label: string,
    call: { op: string; seq: number; peer: number },
    body: (scope: OpScope, sent: (bytes: number) => void) => Promise<T>,
  ): Promise<T> {
    this.#throwIfStopped(label);
    const scope = new OpScope(`${label} (group ${this.id})`, this.#fabric.timeoutMs);
    const flight = this.#fabric.recorder?.begin(call.op, this.id, call.seq, this.#world(call.peer));
    const sent = (bytes: number) => {
      this.bytesSent[call.op] = (this.bytesSent[call.op] ?? 0) + bytes;
      if (flight) flight.bytes += bytes;
    };
    this.#scopes.add(scope);
    let ok = false;
    try {
      const result = await scope.run(() => body(scope, sent));
      ok = true;
      return result;
    } finally {
      this.#scopes.delete(scope);
      if (flight) this.#fabric.recorder?.end(flight, ok);
    }
  }

  #collective<T>(op: string, dtype: WireDtype | undefined, body: (link: RingLink) => Promise<T>): Promise<T> {
    const seq = this.#seq++; // taken synchronously, so it follows the program's call order
    this.lastCollective = { op, seq, group: this.id };
    const codec = wireCodec(dtype ?? 'fp32');
    const next = (this.rank + 1) % this.size;
    const prev = (this.rank + this.size - 1) % this.size;
    return this.#scoped(`${op} #${seq}`, { op, seq, peer: prev }, async (scope, sent) => {
      const { transport, segmentBytes } = this.#fabric;
      const nextWorld = this.#world(next);
      const sends: Promise<void>[] = [];
      const header = (step: number, seg: number): Header => ({
        kind: 'collective',
        group: this.id,
        op,
        seq,
        step,
        seg,
        src: this.#world(this.rank),
        dtype: codec.dtype,
      });
      const track = (sending: Promise<void>) => {
        const scoped = scope.send(sending, next);
        scoped.catch((e: Error) => scope.fail(e)); // fail now, not when the body gets round to awaiting it
        sends.push(scoped);
      };
      const link: RingLink = {
        rank: this.rank,
        size: this.size,
        codec,
        segmentElements: Math.max(1, Math.floor(segmentBytes / codec.bytesPerElement)),
        sendNext: (step, seg, payload) => {
          sent(payload.byteLength);
          track(transport.send(nextWorld, header(step, seg), payload));
        },
        sendNextInto: (step, seg, bytes, fill) => {
          sent(bytes);
          track(transport.sendFilled(nextWorld, header(step, seg), bytes, fill));
        },
        sendCopies: transport.sharedMemory && transport.sharesMemoryWith(nextWorld),
        recvPrev: async (step, seg, elements, use) => {
          const key = { kind: 'collective', group: this.id, seq, step, seg, src: this.#world(prev) } as const;
          const { header: h, payload, release } = await scope.receive(transport.expect(key), prev);
          try {
            checkPayload(h, payload, step, seg, elements);
            use(payload);
          } finally {
            release?.();
          }
        },
      };
      const checkPayload = (h: Header, payload: Uint8Array, step: number, seg: number, elements: number) => {
        if (
          h.op !== op ||
          h.dtype !== codec.dtype ||
          payload.byteLength !== elements * codec.bytesPerElement
        ) {
          throw new CommMismatchError(
            `${scope.label}: rank ${prev} sent ${h.op} (${h.dtype}, ${payload.byteLength} bytes) for step ${step} ` +
              `segment ${seg}, expected ${op} (${codec.dtype}, ${elements * codec.bytesPerElement} bytes): ` +
              'ranks called different collectives, dtypes or lengths',
          );
        }
      };
      const result = await body(link);
      await Promise.all(sends);
      return result;
    });
  }

  #pointToPoint<T>(
    op: 'send' | 'recv',
    seq: number,
    peer: number,
    tag: number,
    body: (scope: OpScope, sent: (bytes: number) => void) => Promise<T>,
  ): Promise<T> {
    this.lastCollective = { op, seq, group: this.id };
    const dir = op === 'send' ? 'to' : 'from';
    return this.#scoped(`${op} #${seq} ${dir} rank ${peer} tag ${tag}`, { op, seq, peer }, body);
  }
}

/** Whether two arrays share bytes. */
function overlaps(a: Float32Array, b: Float32Array): boolean {
  return (
    a.buffer === b.buffer &&
    a.byteOffset < b.byteOffset + b.byteLength &&
    b.byteOffset < a.byteOffset + a.byteLength
  );
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0)
    throw new RangeError(`tag must be a non-negative integer, got ${tag}`);
}

/** Returns the counter under `key` and advances it. */
function nextOf(counters: Map<string, number>, key: string): number {
  const n = counters.get(key) ?? 0;
  counters.set(key, n + 1);
  return n;
}
