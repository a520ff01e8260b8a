/**
 * The shared-memory data plane between two processes on one node: one ring file per ordered pair, made by the
 * receiver in the node's shared-memory directory and mapped by both, and its doorbell, a FIFO beside it. The
 * sender copies a message (its header and its payload) into the ring once, publishes it by moving its head
 * cursor, and writes a byte to the doorbell; the receiver's event loop wakes on that byte (no thread, no core
 * spent waiting), reads every published message, and reduces or decodes straight out of the ring before it
 * releases the bytes. No per-message allocation on either side, no copies through the kernel, and no ZeroMQ
 * message on the way: deadlines, aborts and dead peers stay the process group's and the watchdog's, as on
 * every path.
 *
 * Layout: a 4 KiB control page, then the data area. Cursors are byte counts that grow for ever (mod a multiple of
 * the data area's size, so that a cursor mod that size is where it points). The receiver's `tail` (everything
 * before it is free) is at byte 0 of the control page, written only by the receiver; the sender's `head`
 * (everything before it is published) at byte 64, written only by the sender. A message is one block: two u32s (header bytes, payload bytes), the msgpack
 * header, the payload from the next cache line. A block never wraps: one that would not fit before the end
 * starts at the beginning, and a WRAP word marks the gap. Blocks are released in any order (a pipeline's
 * receive may take its message late); the tail moves over the released prefix.
 *
 * The receiver trusts nothing the ring says: a block must lie inside the published bytes and the data area,
 * with a header of a sane size, or the sender has broken the protocol.
 */
import { closeSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { type NativeLoad, nativeModule } from '../base/native-module.ts';

/** What native/shm.c exports. */
export interface ShmBinding {
  /**
   * A shared mapping of `path`: `create`, a new 0600 file of `bytes` zeros; else an existing one of this user's,
   * of that size (0: of its size).
   */
  map(path: string, bytes: number, create: boolean): ArrayBuffer;
  /**
   * Prefaults the whole mapping writable without changing a byte (MADV_POPULATE_WRITE); false where the kernel
   * cannot, and the pages then fault in one by one as they are first used.
   */
  populate(ring: ArrayBuffer): boolean;
  /**
   * A ring's doorbell, a file descriptor: `create`, a new 0600 FIFO opened to read (and write, so that it never
   * reads end-of-file); else an existing FIFO of this user's, opened to write. Non-blocking both.
   */
  bell(path: string, create: boolean): number;
  /** Writes one byte to a doorbell; false when its reader has gone. */
  ring(fd: number): boolean;
  /** `acc[i] = op(acc[i], x[i])`, op 0 sum, 1 max, 2 min (reduce-op.ts's loops, same bits). */
  reduce(op: 0 | 1 | 2, acc: Float32Array, x: Float32Array): void;
  /** `wire[i] = (wire[i] + x[i]) / divisor`, each step rounded to fp32 (the fp32 codec's hop). */
  addDivide(wire: Float32Array, x: Float32Array, divisor: number): void;
  /** `x[i] = (wire[i] + x[i]) / divisor`, the same values written to `x` instead (and to `copy`, when given). */
  addDivideInto(wire: Float32Array, x: Float32Array, divisor: number, copy?: Float32Array): void;
  /** `dst[i] = (wire[i] + x[i]) / divisor`, neither operand written. */
  addDivideTo(wire: Float32Array, x: Float32Array, divisor: number, dst: Float32Array): void;
}

const shmModule = nativeModule<ShmBinding>('kd_shm', 'KD_SHM', 'the shared-memory binding');

/** The shared-memory binding, or undefined and why not (KD_SHM=off forces the ZeroMQ path). */
export const loadShmBinding = (): NativeLoad<ShmBinding> => shmModule.load();

/** The control page: the receiver's tail at byte 0, the sender's head at byte 64; the data area starts after it. */
const CONTROL_BYTES = 4096;
const TAIL = 0;
const HEAD = 64 / 4;
/** Blocks start on cache lines, so float payloads are aligned and two blocks never share a line. */
const ALIGN = 64;
/** A block's first words: its header's bytes and its payload's. */
const PREFIX_BYTES = 8;
/** In place of a block's header size: the rest of the data area is a gap, the next block is at its start. */
const WRAP = 0xffffffff;
/** More than any header a kd-launch sender writes (group and op names are short strings). */
const MAX_HEADER_BYTES = 1024;
/**
 * Data bytes per ring (by default; tests make small ones to wrap often): 64 MiB of payloads, and a cache line
 * for the header of each of up to 1,024 blocks. A ring rank sends a whole chunk (its buffer over the world
 * size) at the first step, so this bounds the all-reduce that runs wholly in shared memory at 128 MiB at world
 * 2; a message that does not fit travels over ZeroMQ, correctly, and slower. The file is sparse: only pages a
 * block touched take memory.
 */
export const RING_DATA_BYTES = (64 << 20) + 1024 * ALIGN;
const MAX_DATA_BYTES = 1 << 30;

/**
 * Cursor arithmetic: byte counts mod the largest multiple of the data area's size below 2^32, so that they fit
 * the control page's u32 words and a cursor mod the size is where it points whatever the size.
 */
class Cursors {
  readonly #span: number;

  constructor(readonly capacity: number) {
    this.#span = capacity * Math.floor(2 ** 32 / capacity);
  }

  add(cursor: number, bytes: number): number {
    return (cursor + bytes) % this.#span;
  }

  /** Bytes from `from` forward to `to`. */
  distance(from: number, to: number): number {
    return (to - from + this.#span) % this.#span;
  }
}

/** The first payload of this size prefaults a side's mapping of the ring (`populate`). */
const POPULATE_FROM_BYTES = 64 << 10;

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** The doorbell of the ring at `ring`. */
export const bellPath = (ring: string) => `${ring}.bell`;

/** The sending side of a ring: copies messages in while there is room, and wakes the receiver. */
export class ShmSender {
  readonly #binding: ShmBinding;
  readonly #data: Uint8Array;
  readonly #words: Uint32Array;
  readonly #control: Uint32Array;
  /** The doorbell's descriptor; undefined once closed (a descriptor number is reused: never close it twice). */
  #bell: number | undefined;
  readonly #cursors: Cursors;
  #head: number;
  /** The head once the reserved block is published; undefined when none is reserved. */
  #reserved: number | undefined;
  /** Prefaults the ring on its first large payload (a pair that only synchronises never pays for its memory). */
  #populate: (() => void) | undefined;

  constructor(binding: ShmBinding, path: string) {
    this.#binding = binding;
    const memory = binding.map(path, 0, false);
    this.#control = new Uint32Array(memory, 0, CONTROL_BYTES / 4);
    this.#data = new Uint8Array(memory, CONTROL_BYTES);
    this.#words = new Uint32Array(memory, CONTROL_BYTES);
    this.#cursors = new Cursors(this.#data.byteLength);
    this.#head = Atomics.load(this.#control, HEAD);
    this.#bell = binding.bell(bellPath(path), false);
    this.#populate = () => binding.populate(memory);
  }

  /**
   * Makes room for a message of `payloadBytes` and writes its header: the caller writes the payload straight into
   * the view returned (an encoding, a sum), then `publish`es it. Undefined when the ring has no room for it now.
   */
  reserve(header: Uint8Array, payloadBytes: number): Uint8Array | undefined {
    if (this.#reserved !== undefined) throw new Error('a ring block is reserved and not yet published');
    if (payloadBytes >= POPULATE_FROM_BYTES) {
      this.#populate?.();
      this.#populate = undefined;
    }
    const { capacity } = this.#cursors;
    const payloadAt = alignUp(PREFIX_BYTES + header.byteLength);
    const bytes = alignUp(payloadAt + payloadBytes);
    const at = this.#head % capacity;
    const gap = at + bytes > capacity ? capacity - at : 0;
    const used = this.#cursors.distance(Atomics.load(this.#control, TAIL), this.#head);
    if (used + gap + bytes > capacity) return undefined;
    if (gap > 0) this.#words[at / 4] = WRAP;
    const start = this.#cursors.add(this.#head, gap);
    const o = start % capacity;
    this.#words[o / 4] = header.byteLength;
    this.#words[o / 4 + 1] = payloadBytes;
    this.#data.set(header, o + PREFIX_BYTES);
    this.#reserved = this.#cursors.add(start, bytes);
    return this.#data.subarray(o + payloadAt, o + payloadAt + payloadBytes);
  }

  /** Hands the reserved message to the receiver (moves the head over it) and rings. */
  publish(): void {
    if (this.#reserved === undefined) throw new Error('no ring block is reserved');
    this.#head = this.#reserved;
    this.#reserved = undefined;
    Atomics.store(this.#control, HEAD, this.#head);
    if (this.#bell !== undefined) this.#binding.ring(this.#bell);
  }

  /** Gives up the reserved block: nothing was published, the head stays. */
  unreserve(): void {
    this.#reserved = undefined;
  }

  close(): void {
    if (this.#bell !== undefined) closeSync(this.#bell);
    this.#bell = undefined;
  }
}

/** A message read out of a ring: views of its header and payload, and the function that gives them back. */
export interface ShmMessage {
  header: Buffer;
  payload: Buffer;
  /** Gives the block back to the sender: call it once, when done with both views. */
  release: () => void;
}

/** A block the receiver holds: from the end of the previous block (gap included) to its own end. */
interface Held {
  end: number;
  released: boolean;
}

/** The receiving side of a ring: hands out views of published messages and takes them back. */
export class ShmReceiver {
  readonly path: string;
  readonly buffer: ArrayBuffer;
  readonly #words: Uint32Array;
  readonly #control: Uint32Array;
  readonly #cursors: Cursors;
  /** Where the next block starts (after a WRAP word, at the beginning), as a cursor. */
  #read: number;
  readonly #held: Held[] = [];
  readonly #bell: Socket;
  #linked = true;
  #populate: (() => void) | undefined;

  /**
   * Makes the ring and its doorbell; `onRing` runs in the event loop whenever the sender has rung. The cursors
   * start at `firstCursor` (tests start them just before they wrap).
   */
  constructor(
    binding: ShmBinding,
    path: string,
    onRing: () => void,
    dataBytes = RING_DATA_BYTES,
    firstCursor = 0,
  ) {
    if (!(dataBytes >= ALIGN && dataBytes % ALIGN === 0 && dataBytes <= MAX_DATA_BYTES))
      throw new RangeError(`a ring's data area is whole cache lines up to 1 GiB, not ${dataBytes} bytes`);
    this.path = path;
    this.buffer = binding.map(path, CONTROL_BYTES + dataBytes, true);
    this.#control = new Uint32Array(this.buffer, 0, CONTROL_BYTES / 4);
    this.#words = new Uint32Array(this.buffer, CONTROL_BYTES);
    this.#cursors = new Cursors(dataBytes);
    this.#read = this.#cursors.add(firstCursor, 0);
    Atomics.store(this.#control, TAIL, this.#read);
    Atomics.store(this.#control, HEAD, this.#read);
    this.#populate = () => binding.populate(this.buffer);
    let fd: number;
    try {
      fd = binding.bell(bellPath(path), true);
    } catch (err) {
      rmSync(path, { force: true });
      throw err;
    }
    // The event loop polls the FIFO like any pipe; the bytes themselves say nothing.
    this.#bell = new Socket({ fd, readable: true, writable: false });
    this.#bell.on('data', onRing);
    this.#bell.on('error', () => {});
  }

  /**
   * The next published message, or undefined when every published one has been read. Throws a description of
   * the violation when the ring holds something no kd-launch sender writes.
   */
  next(): ShmMessage | undefined {
    const { capacity } = this.#cursors;
    const published = this.#cursors.distance(this.#read, Atomics.load(this.#control, HEAD));
    if (published === 0) return undefined;
    if (published > capacity) throw new Error(`a shared-memory head ${published} bytes ahead, past the ring`);
    let at = this.#read % capacity;
    let skipped = 0;
    if (this.#words[at / 4] === WRAP) {
      skipped = capacity - at;
      at = 0;
    }
    const headerBytes = this.#words[at / 4];
    const payloadBytes = this.#words[at / 4 + 1];
    const payloadAt = alignUp(PREFIX_BYTES + headerBytes);
    const bytes = alignUp(payloadAt + payloadBytes);
    if (
      skipped >= published ||
      headerBytes === 0 ||
      headerBytes > MAX_HEADER_BYTES ||
      payloadBytes > capacity ||
      at + bytes > capacity ||
      skipped + bytes > published
    )
      throw new Error(
        `a shared-memory block at ${at} of ${headerBytes} + ${payloadBytes} bytes that is not a message`,
      );
    if (payloadBytes >= POPULATE_FROM_BYTES) {
      this.#populate?.();
      this.#populate = undefined;
    }
    this.#read = this.#cursors.add(this.#read, skipped + bytes);
    const held: Held = { end: this.#read, released: false };
    this.#held.push(held);
    return {
      header: Buffer.from(this.buffer, CONTROL_BYTES + at + PREFIX_BYTES, headerBytes),
      payload: Buffer.from(this.buffer, CONTROL_BYTES + at + payloadAt, payloadBytes),
      release: () => this.#release(held),
    };
  }

  /** Removes the ring's file and its doorbell's: the sender has opened both (its first message arrived). */
  unlink(): void {
    if (!this.#linked) return;
    this.#linked = false;
    rmSync(this.path, { force: true });
    rmSync(bellPath(this.path), { force: true });
  }

  /** Stops listening and removes the files; the mapping stays while views of it live. */
  close(): void {
    this.#bell.destroy();
    this.unlink();
  }

  #release(held: Held): void {
    if (held.released) return;
    held.released = true;
    let end: number | undefined;
    while (this.#held.length > 0 && this.#held[0].released) end = (this.#held.shift() as Held).end;
    if (end !== undefined) Atomics.store(this.#control, TAIL, end);
  }
}
