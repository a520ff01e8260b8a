/**
 * The shared-memory data plane between two processes on one node: one ring file per ordered pair, made by the
 * receiver in the node's shared-memory directory and mapped by both. The sender copies a payload into the
 * ring once and tells the receiver where it is in the frame's header (over the pair's ZeroMQ socket, which
 * keeps order, deadlines, aborts and dead-peer detection what they are on every transport); the receiver
 * reduces or decodes straight out of the ring and then releases the bytes. No per-message allocation on either
 * side, no copies through the kernel.
 *
 * Layout: a 4 KiB control page, then the data area. Each side owns one cursor, a byte count that grows for
 * ever (mod 2^32): the sender's `head` lives in the sender, the receiver's `tail` (everything before it is free)
 * in the control page, written only by the receiver. A block never wraps: one that would not fit before the
 * end starts at the beginning, and the gap is released with it. Blocks are released in any order (a
 * pipeline's receive may take its message late); the tail moves over the released prefix.
 *
 * The receiver trusts nothing a header says: a block must start where the previous one ended (or at the
 * beginning, after a gap) and lie inside the data area, or the sender has broken the protocol.
 */
import { rmSync } from 'node:fs';
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
  /** `acc[i] = op(acc[i], x[i])`, op 0 sum, 1 max, 2 min (reduce-op.ts's loops, same bits). */
  reduce(op: 0 | 1 | 2, acc: Float32Array, x: Float32Array): void;
  /** `wire[i] = (wire[i] + x[i]) / divisor`, each step rounded to fp32 (the fp32 codec's hop). */
  addDivide(wire: Float32Array, x: Float32Array, divisor: number): void;
  /** `x[i] = (wire[i] + x[i]) / divisor`, the same values written to `x` instead. */
  addDivideInto(wire: Float32Array, x: Float32Array, divisor: number): void;
}

const shmModule = nativeModule<ShmBinding>('kd_shm', 'KD_SHM', 'the shared-memory binding');

/** The shared-memory binding, or undefined and why not (KD_SHM=off forces the ZeroMQ path). */
export const loadShmBinding = (): NativeLoad<ShmBinding> => shmModule.load();

/** The control page: the receiver's tail at byte 0; the data area starts after it. */
const CONTROL_BYTES = 4096;
/** Blocks start on cache lines, so float payloads are aligned and two blocks never share a line. */
const ALIGN = 64;
/**
 * Data bytes per ring (by default; tests make small ones to wrap often). A ring rank sends a whole chunk (its buffer over the world size) at the first step,
 * so this bounds the all-reduce that runs wholly in shared memory at 2 × this at world 2; what does not fit
 * travels over ZeroMQ, correctly, and slower. The file is sparse: only pages a block touched take memory.
 */
export const RING_DATA_BYTES = 64 << 20;
/** Payloads below this go inside the frame: the header travels anyway and a copy of a few bytes is free. */
export const SHM_MIN_BYTES = 1024;

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** Where a payload is in its ring: the header's `shm` field, `[start cursor, bytes]`. */
export type ShmRef = readonly [number, number];

/** The sending side of a ring: copies payloads in while there is room. */
export class ShmSender {
  readonly #data: Uint8Array;
  readonly #tail: Uint32Array;
  #head = 0;
  /** Prefaults the ring on its first payload (a pair that never talks never pays for its ring's memory). */
  #populate: (() => void) | undefined;

  constructor(binding: ShmBinding, path: string) {
    const memory = binding.map(path, 0, false);
    this.#tail = new Uint32Array(memory, 0, 1);
    this.#data = new Uint8Array(memory, CONTROL_BYTES);
    this.#populate = () => binding.populate(memory);
  }

  /** Copies `payload` into the ring and says where it is; undefined when the ring has no room for it now. */
  write(payload: Uint8Array): ShmRef | undefined {
    this.#populate?.();
    this.#populate = undefined;
    const capacity = this.#data.byteLength;
    const bytes = alignUp(payload.byteLength);
    const at = this.#head % capacity;
    const gap = at + bytes > capacity ? capacity - at : 0;
    const used = (this.#head - Atomics.load(this.#tail, 0)) >>> 0;
    if (used + gap + bytes > capacity) return undefined;
    const start = (this.#head + gap) >>> 0;
    this.#data.set(payload, start % capacity);
    this.#head = (start + bytes) >>> 0;
    return [start, payload.byteLength];
  }
}

/** A block the receiver holds: from the end of the previous block (gap included) to its own end. */
interface Held {
  end: number;
  released: boolean;
}

/** The receiving side of a ring: hands out views of arrived payloads and takes them back. */
export class ShmReceiver {
  readonly path: string;
  readonly buffer: ArrayBuffer;
  readonly #data: Uint8Array;
  readonly #tail: Uint32Array;
  /** Where the next block must start (the end of the last one), as a cursor. */
  #expected = 0;
  readonly #held: Held[] = [];
  #linked = true;
  #populate: (() => void) | undefined;

  constructor(binding: ShmBinding, path: string, dataBytes = RING_DATA_BYTES) {
    if (dataBytes % ALIGN !== 0)
      throw new RangeError(`a ring's data area is whole cache lines, not ${dataBytes} bytes`);
    this.path = path;
    this.buffer = binding.map(path, CONTROL_BYTES + dataBytes, true);
    this.#tail = new Uint32Array(this.buffer, 0, 1);
    this.#data = new Uint8Array(this.buffer, CONTROL_BYTES);
    this.#populate = () => binding.populate(this.buffer);
  }

  /**
   * The payload `ref` points at, and the function that gives its bytes back to the sender (call it once,
   * when done with the view). Throws a description of the violation when `ref` is not the next block.
   */
  take(ref: ShmRef): { payload: Buffer; release: () => void } {
    this.#populate?.();
    this.#populate = undefined;
    const capacity = this.#data.byteLength;
    const [start, length] = ref;
    const bytes = alignUp(length);
    const at = start % capacity;
    const skipped = (start - this.#expected) >>> 0;
    const afterGap = at === 0 && skipped === (capacity - (this.#expected % capacity)) % capacity;
    if (!(skipped === 0 || afterGap) || at + bytes > capacity || length === 0)
      throw new Error(`a shared-memory block [${start}, +${length}] that is not the next one`);
    this.#expected = (start + bytes) >>> 0;
    const held: Held = { end: this.#expected, released: false };
    this.#held.push(held);
    const payload = Buffer.from(this.buffer, CONTROL_BYTES + at, length);
    return { payload, release: () => this.#release(held) };
  }

  /** Removes the ring's file: the sender has mapped it (its first frame arrived), the memory stays. */
  unlink(): void {
    if (!this.#linked) return;
    this.#linked = false;
    rmSync(this.path, { force: true });
  }

  #release(held: Held): void {
    if (held.released) return;
    held.released = true;
    let end: number | undefined;
    while (this.#held.length > 0 && this.#held[0].released) end = (this.#held.shift() as Held).end;
    if (end !== undefined) Atomics.store(this.#tail, 0, end);
  }
}
