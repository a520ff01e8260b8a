/**
 * Ring algorithms, written once for every wire dtype and every group.
 *
 * The buffer is cut into `size` chunks and every chunk into segments. Each segment travels on its own: a rank
 * handles a segment as soon as it arrives (reduce, then forward), so sending one segment, receiving the next
 * and reducing a third overlap. Nothing is awaited per step.
 *
 * Copies: a payload that arrives is reduced in place and forwarded as is (it belongs to this process until
 * the handler returns).
 * A payload that is a view of the caller's memory is sent without a copy only where a later receive proves
 * the peer has read it before the caller can write to it again (see `allReduceRing`); elsewhere it is copied.
 */
import { reduceInto } from './reduce-op.ts';
import type { ReduceOp } from './types.ts';
import type { WireCodec } from './wire-dtype.ts';

/** A half-open range of element indices. */
export interface Span {
  start: number;
  end: number;
}

/** The group as a ring seen from one rank: messages go to the next rank and come from the previous one. */
export interface RingLink {
  readonly rank: number;
  readonly size: number;
  readonly codec: WireCodec;
  /** Elements per segment. */
  readonly segmentElements: number;
  /**
   * Queues `payload` for the next rank as (step, seg); the link tracks the send. The payload must stay as it is
   * until the peer has read it (a received payload may be forwarded: the link copies what it must).
   */
  sendNext(step: number, seg: number, payload: Uint8Array): void;
  /**
   * Queues a payload of `bytes` for the next rank as (step, seg), written by `fill` straight where it travels
   * from: the next rank's ring, or a frame of its own.
   */
  sendNextInto(step: number, seg: number, bytes: number, fill: (payload: Uint8Array) => void): void;
  /**
   * Whether the next rank is reached through shared memory, where a payload is written into its ring anyway:
   * writing it there while computing it costs nothing more; over ZeroMQ it costs a fresh frame per segment.
   */
  readonly sendCopies: boolean;
  /**
   * Hands `use` the payload the previous rank sent as (step, seg), checked to hold `elements` values. The
   * payload is `use`'s only while it runs (it may be a view of shared memory, given back after): it may be
   * written to and passed to `sendNext`, not kept.
   */
  recvPrev(step: number, seg: number, elements: number, use: (payload: Uint8Array) => void): Promise<void>;
}

const mod = (a: number, n: number) => ((a % n) + n) % n;

/** The segments of `span`, as absolute spans. */
export function segmentsOf(span: Span, segmentElements: number): Span[] {
  const out: Span[] = [];
  for (let s = span.start; s < span.end; s += segmentElements)
    out.push({ start: s, end: Math.min(span.end, s + segmentElements) });
  return out;
}

/** One fp32 scratch array, reused: it only lives between a decode and the encode that follows, with no await. */
let scratch = new Float32Array(0);
function scratchOf(n: number): Float32Array {
  if (scratch.length < n) scratch = new Float32Array(Math.max(n, scratch.length * 2));
  return scratch.subarray(0, n);
}

/** The fp32 values of a payload: the payload itself when the codec allows, else decoded into scratch. */
function valuesOf(
  codec: WireCodec,
  payload: Uint8Array,
  n: number,
): { values: Float32Array; isView: boolean } {
  const view = codec.viewFloat32(payload);
  if (view) return { values: view, isView: true };
  const values = scratchOf(n);
  codec.decodeInto(payload, values);
  return { values, isView: false };
}

/**
 * Sends caller-owned `values` as (0, seg): a view when `borrow` (fp32 only), otherwise encoded straight where
 * the payload travels from (the next rank's ring, or a frame of its own).
 */
function sendValues(link: RingLink, seg: number, values: Float32Array, borrow: boolean): void {
  const { codec } = link;
  if (borrow && codec.dtype === 'fp32') {
    link.sendNext(0, seg, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return;
  }
  link.sendNextInto(0, seg, values.length * codec.bytesPerElement, (payload) => {
    codec.encode(values, payload);
  });
}

/**
 * `payload = op(payload, x)`, in place, rounded to the wire like any partial sum in flight. Sums (the hot path:
 * gradients) go through the codec's fused one-pass `addEncode`; max and min decode, reduce and encode.
 */
function accumulate(codec: WireCodec, op: ReduceOp, payload: Uint8Array, x: Float32Array): Uint8Array {
  if (op === 'sum' || op === 'avg') return codec.addEncode(payload, x, 1);
  const { values, isView } = valuesOf(codec, payload, x.length);
  reduceInto(op, values, x);
  return isView ? payload : codec.encode(values, payload);
}

/**
 * A reduce-scatter step short of the last: `op(payload, x)` on to the next rank. A sum going into shared memory
 * is computed straight into the next rank's ring (the received payload is only read); elsewhere it is computed
 * in the payload, which is then forwarded (over ZeroMQ, the very frame that arrived).
 */
function forwardPartial(
  link: RingLink,
  op: ReduceOp,
  payload: Uint8Array,
  x: Float32Array,
  step: number,
  seg: number,
): void {
  const { codec } = link;
  if (link.sendCopies && (op === 'sum' || op === 'avg'))
    link.sendNextInto(step, seg, x.length * codec.bytesPerElement, (next) => {
      codec.addEncode(payload, x, 1, undefined, next);
    });
  else link.sendNext(step, seg, accumulate(codec, op, payload, x));
}

/**
 * The owner's last step: `op(payload, x)` finished (avg divided), rounded to the wire ONCE and written to `out`,
 * so every rank, the owner included, ends with the same bits. Returns the wire payload that holds them.
 */
function finish(
  codec: WireCodec,
  op: ReduceOp,
  size: number,
  payload: Uint8Array,
  x: Float32Array,
  out: Float32Array,
): Uint8Array {
  if (op === 'sum' || op === 'avg') return codec.addEncode(payload, x, op === 'avg' ? size : 1, out);
  const { values, isView } = valuesOf(codec, payload, x.length);
  reduceInto(op, values, x);
  if (isView) {
    out.set(values);
    return payload;
  }
  const encoded = codec.encode(values, payload);
  codec.decodeInto(encoded, out);
  return encoded;
}

/**
 * The all-reduce's owner step: `finish`, then the final values on to the next rank for the all-gather. A sum
 * going into shared memory is computed straight into the next rank's ring and `out` (for fp32 with `out` the
 * caller's buffer, in one pass: instead of reducing in the payload, copying out and copying on).
 */
function finishAndForward(
  link: RingLink,
  op: ReduceOp,
  payload: Uint8Array,
  x: Float32Array,
  out: Float32Array,
  step: number,
  seg: number,
): void {
  const { codec, size } = link;
  if (link.sendCopies && (op === 'sum' || op === 'avg'))
    link.sendNextInto(step, seg, x.length * codec.bytesPerElement, (next) => {
      codec.addEncode(payload, x, op === 'avg' ? size : 1, out, next);
    });
  else link.sendNext(step, seg, finish(codec, op, size, payload, x, out));
}

/**
 * Ring reduce-scatter: chunk c ends fully reduced on rank c. In step s rank r sends chunk r−s−1 and receives
 * chunk r−s−2; the chunk a rank receives at the last step is its own. `onFinal` finishes each segment of it from
 * the payload that arrived, this rank's values `x` of the segment, and `out`, where its final values go.
 */
async function reduceScatterRing(
  link: RingLink,
  op: ReduceOp,
  input: Float32Array,
  chunks: readonly Span[],
  out: Float32Array,
  outOffset: number,
  borrowInput: boolean,
  onFinal: (seg: number, payload: Uint8Array, x: Float32Array, out: Float32Array) => void,
): Promise<void> {
  const { rank, size, segmentElements } = link;
  const first = chunks[mod(rank - 1, size)];
  segmentsOf(first, segmentElements).forEach((sp, j) => {
    sendValues(link, j, input.subarray(sp.start, sp.end), borrowInput);
  });
  const tasks: Promise<void>[] = [];
  for (let s = 0; s < size - 1; s++) {
    const last = s === size - 2;
    segmentsOf(chunks[mod(rank - s - 2, size)], segmentElements).forEach((sp, j) => {
      const x = input.subarray(sp.start, sp.end);
      tasks.push(
        link.recvPrev(s, j, x.length, (payload) => {
          if (!last) return forwardPartial(link, op, payload, x, s + 1, j);
          onFinal(j, payload, x, out.subarray(sp.start - outOffset, sp.end - outOffset));
        }),
      );
    });
  }
  await Promise.all(tasks);
}

/**
 * Ring all-gather: rank r starts with chunk r (sent by `sendOwn` as step `stepBase`); in step t it receives
 * chunk r−t−1 into `out` and forwards it unless it was the last step. `out` is read anew at each write: memory
 * that moves while the collective waits (the wasm heap, when it grows) is written where it is then.
 */
async function allGatherRing(
  link: RingLink,
  chunks: readonly Span[],
  out: () => Float32Array,
  stepBase: number,
): Promise<void> {
  const { rank, size, codec, segmentElements } = link;
  const tasks: Promise<void>[] = [];
  for (let t = 0; t < size - 1; t++) {
    segmentsOf(chunks[mod(rank - t - 1, size)], segmentElements).forEach((sp, j) => {
      tasks.push(
        link.recvPrev(stepBase + t, j, sp.end - sp.start, (payload) => {
          codec.decodeInto(payload, out().subarray(sp.start, sp.end));
          if (t < size - 2) link.sendNext(stepBase + t + 1, j, payload);
        }),
      );
    });
  }
  await Promise.all(tasks);
}

/** The `size` chunks of a length-`length` buffer, rank c owning `shardRange(length, size, c)`. */
export function evenChunks(length: number, size: number): Span[] {
  return Array.from({ length: size }, (_, c) => ({
    start: Math.floor((c * length) / size),
    end: Math.floor(((c + 1) * length) / size),
  }));
}

/**
 * In-place all-reduce: reduce-scatter, then all-gather of the reduced chunks.
 * The first step sends views of `buf` without copying: a rank writes chunk c of `buf` again only when c's final
 * value arrives, which the next rank can only have produced after reading this rank's first-step payload.
 */
export async function allReduceRing(link: RingLink, op: ReduceOp, buf: Float32Array): Promise<void> {
  const chunks = evenChunks(buf.length, link.size);
  const stepBase = link.size - 1;
  await Promise.all([
    reduceScatterRing(link, op, buf, chunks, buf, 0, true, (j, payload, x, out) =>
      finishAndForward(link, op, payload, x, out, stepBase, j),
    ),
    allGatherRing(link, chunks, () => buf, stepBase),
  ]);
}

/**
 * Reduce-scatter into `out` (this rank's chunk's length; a fresh array when absent). `out` is either apart from
 * `input`, which is then left untouched, or `input`'s own chunk (in place, `inPlace`): then only that chunk of
 * `input` changes, to the result.
 */
export async function reduceScatter(
  link: RingLink,
  op: ReduceOp,
  input: Float32Array,
  counts?: readonly number[],
  given?: Float32Array,
  inPlace = false,
): Promise<Float32Array> {
  const chunks = counts ? spansOf(counts) : evenChunks(input.length, link.size);
  const own = chunks[link.rank];
  const out = given ?? new Float32Array(own.end - own.start);
  const final = (_: number, payload: Uint8Array, x: Float32Array, dst: Float32Array) => {
    finish(link.codec, op, link.size, payload, x, dst);
  };
  // In place, as the all-reduce's first half: the other chunks are sent as views of `input`, which this rank never
  // writes. Apart, the caller may reuse `input` as soon as this returns, before the next rank has read the first
  // step: copy it.
  if (inPlace) await reduceScatterRing(link, op, input, chunks, input, 0, true, final);
  else await reduceScatterRing(link, op, input, chunks, out, own.start, false, final);
  return out;
}

/** Back-to-back spans of `counts[c]` elements each. */
function spansOf(counts: readonly number[]): Span[] {
  const chunks: Span[] = [];
  let at = 0;
  for (const n of counts) {
    chunks.push({ start: at, end: at + n });
    at += n;
  }
  return chunks;
}

/**
 * All-gather of `shard` into `out()`, whose chunk c holds `counts[c]` values; `shard` may be `out`'s own chunk (it
 * is encoded before anything lands there). Every chunk, this rank's too, holds the values as the wire rounded
 * them. `out` is called at each write (see allGatherRing); `shard` is read before this first awaits.
 */
export async function allGatherInto(
  link: RingLink,
  shard: Float32Array,
  counts: readonly number[],
  out: () => Float32Array,
): Promise<void> {
  const chunks = spansOf(counts);
  const own = chunks[link.rank];
  const { codec, segmentElements } = link;
  segmentsOf({ start: 0, end: shard.length }, segmentElements).forEach((sp, j) => {
    const payload = codec.encode(shard.subarray(sp.start, sp.end)); // a copy: the caller keeps `shard`
    // The same rounding as the peers see.
    codec.decodeInto(payload, out().subarray(own.start + sp.start, own.start + sp.end));
    link.sendNext(0, j, payload);
  });
  await allGatherRing(link, chunks, out, 0);
}

/**
 * Broadcast as a segmented chain root → root+1 → … → root−1. The root's payloads are copies (the caller may
 * write to `buf` once this returns) and in half precision the root keeps the rounded values, like everyone.
 */
export async function broadcastChain(link: RingLink, buf: Float32Array, root: number): Promise<void> {
  const { rank, size, codec, segmentElements } = link;
  const position = mod(rank - root, size);
  const segments = segmentsOf({ start: 0, end: buf.length }, segmentElements);
  if (position === 0) {
    segments.forEach((sp, j) => {
      const dst = buf.subarray(sp.start, sp.end);
      const payload = codec.encode(dst);
      if (codec.dtype !== 'fp32') codec.decodeInto(payload, dst);
      link.sendNext(0, j, payload);
    });
    return;
  }
  await Promise.all(
    segments.map((sp, j) => {
      const dst = buf.subarray(sp.start, sp.end);
      return link.recvPrev(0, j, dst.length, (payload) => {
        codec.decodeInto(payload, dst);
        if (position < size - 1) link.sendNext(0, j, payload);
      });
    }),
  );
}
