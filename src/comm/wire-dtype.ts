/**
 * How fp32 values travel on the wire. Accumulation always happens in fp32; a codec only turns fp32 values
 * into wire bytes and back. One `WireCodec` per `WireDtype`, so the collectives are written once for all.
 *
 * Encoding to half precision is table-free bit manipulation over a Uint32Array alias of the fp32 data: round to
 * nearest, ties to even; subnormals both ways; overflow becomes ±inf; NaN stays NaN (quiet). Decoding is exact,
 * through a 64 Ki-entry table (one load per element, twice as fast as the bit manipulation here).
 */
import { reduceInto } from './reduce-op.ts';
import type { WireDtype } from './types.ts';

export interface WireCodec {
  readonly dtype: WireDtype;
  readonly bytesPerElement: number;
  /** Wire bytes of `src`, written into `dst` (`src.length * bytesPerElement` bytes) or a fresh buffer. */
  encode(src: Float32Array, dst?: Uint8Array): Uint8Array;
  /** `dst[i] = value(wire[i])` for the `dst.length` elements of `wire`. */
  decodeInto(wire: Uint8Array, dst: Float32Array): void;
  /** `dst[i] += value(wire[i])`, accumulating in fp32. */
  addInto(wire: Uint8Array, dst: Float32Array): void;
  /**
   * The payload itself as fp32 values when the wire format is fp32 and the bytes are aligned (no copy: writes
   * go to the payload); undefined when the values must be decoded.
   */
  viewFloat32(wire: Uint8Array): Float32Array | undefined;
}

/** Views `bytes` as a typed array of `width`-byte elements, copying only when its offset is misaligned. */
function aligned<T>(
  bytes: Uint8Array,
  width: number,
  make: (b: ArrayBufferLike, off: number, n: number) => T,
): T {
  if (bytes.byteOffset % width !== 0) bytes = bytes.slice();
  return make(bytes.buffer, bytes.byteOffset, bytes.byteLength / width);
}
const u16 = (b: Uint8Array) => aligned(b, 2, (buf, off, n) => new Uint16Array(buf, off, n));
const f32 = (b: Uint8Array) => aligned(b, 4, (buf, off, n) => new Float32Array(buf, off, n));
const bitsOf = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function checkLength(wire: Uint8Array, n: number, bytesPerElement: number): void {
  if (wire.byteLength < n * bytesPerElement) {
    throw new RangeError(`wire payload holds ${wire.byteLength} bytes, ${n * bytesPerElement} needed`);
  }
}

/**
 * Encodes `src` into `dst` (or a fresh buffer) with `loop` (the codec's whole conversion loop, so that the
 * per-element call inside it stays monomorphic and inlined), going through a copy only if `dst` is misaligned.
 */
function encodeHalves(
  src: Float32Array,
  dst: Uint8Array | undefined,
  loop: (bits: Uint32Array, out: Uint16Array) => void,
): Uint8Array {
  if (dst) checkLength(dst, src.length, 2);
  const bytes = dst && dst.byteOffset % 2 === 0 ? dst : new Uint8Array(src.length * 2);
  loop(bitsOf(src), new Uint16Array(bytes.buffer, bytes.byteOffset, src.length));
  if (dst && bytes !== dst) dst.set(bytes);
  return dst ?? bytes;
}

/** Decodes half-precision `wire` through a 64 Ki-entry table of fp32 bit patterns: one load per element. */
function decodeHalves(wire: Uint8Array, dst: Float32Array, table: Uint32Array): void {
  checkLength(wire, dst.length, 2);
  const halves = u16(wire);
  const out = bitsOf(dst);
  for (let i = 0; i < out.length; i++) out[i] = table[halves[i]];
}

function addHalves(wire: Uint8Array, dst: Float32Array, table: Float32Array): void {
  checkLength(wire, dst.length, 2);
  const halves = u16(wire);
  for (let i = 0; i < dst.length; i++) dst[i] += table[halves[i]];
}

/** The fp32 bit pattern of every 16-bit code, built on first use (256 KiB, stays in cache). */
function lazyTable(decode: (h: number) => number): () => Uint32Array {
  let table: Uint32Array | undefined;
  return () => {
    table ??= Uint32Array.from({ length: 0x10000 }, (_, h) => decode(h));
    return table;
  };
}

// ---- fp16 (IEEE binary16) -------------------------------------------------------------------------------

/** fp32 bit pattern → binary16 bit pattern, round to nearest even. */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | (abs === 0x7f800000 ? 0x7c00 : 0x7e00 | ((abs >>> 13) & 0x3ff));
  if (abs >= 0x477ff000) return sign | 0x7c00; // ≥ 65520 (the tie above 65504) rounds to inf
  if (abs >= 0x38800000) {
    // Normal half: rebias the exponent (127 → 15), then round the 13 dropped bits to nearest even.
    const r = abs - 0x38000000;
    return sign | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
  }
  // Subnormal half (unit 2^-24) or zero: shift the full significand right, rounding to nearest even.
  const exp = abs >>> 23;
  const shift = 126 - exp; // value · 2^24 = significand · 2^(exp − 126)
  if (shift > 24) return sign; // below half the smallest subnormal (fp32 subnormals included)
  const mant = (abs & 0x7fffff) | 0x800000;
  const q = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (q + (rem > half || (rem === half && q & 1) ? 1 : 0));
}

/** binary16 bit pattern → fp32 bit pattern (exact). */
export function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise the significand into an fp32 normal.
  const lead = 31 - Math.clz32(mant); // position of the leading 1, 0..9
  return (sign | ((lead + 103) << 23) | ((mant << (23 - lead)) & 0x7fffff)) >>> 0;
}

const f16Table = lazyTable(f16ToF32Bits);

const fp16: WireCodec = {
  dtype: 'fp16',
  bytesPerElement: 2,
  encode: (src, dst) =>
    encodeHalves(src, dst, (bits, out) => {
      for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]);
    }),
  decodeInto: (wire, dst) => decodeHalves(wire, dst, f16Table()),
  addInto: (wire, dst) => {
    const t = f16Table();
    addHalves(wire, dst, new Float32Array(t.buffer, t.byteOffset, t.length));
  },
  viewFloat32: () => undefined,
};

// ---- bf16 (the upper half of an fp32) -----------------------------------------------------------------

/** fp32 bit pattern → bfloat16 bit pattern, round to nearest even; overflow carries into inf by itself. */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40; // NaN: keep it NaN (quiet) after truncation
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

const bf16Table = lazyTable((h) => (h << 16) >>> 0);

const bf16: WireCodec = {
  dtype: 'bf16',
  bytesPerElement: 2,
  encode: (src, dst) =>
    encodeHalves(src, dst, (bits, out) => {
      for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16(bits[i]);
    }),
  decodeInto: (wire, dst) => decodeHalves(wire, dst, bf16Table()),
  addInto: (wire, dst) => {
    const t = bf16Table();
    addHalves(wire, dst, new Float32Array(t.buffer, t.byteOffset, t.length));
  },
  viewFloat32: () => undefined,
};

// ---- fp32 (the identity) ------------------------------------------------------------------------------

const fp32: WireCodec = {
  dtype: 'fp32',
  bytesPerElement: 4,
  encode(src, dst) {
    const bytes = dst ?? new Uint8Array(src.byteLength);
    checkLength(bytes, src.length, 4);
    bytes.set(bytesOf(src));
    return bytes;
  },
  decodeInto(wire, dst) {
    checkLength(wire, dst.length, 4);
    bytesOf(dst).set(wire.subarray(0, dst.byteLength));
  },
  addInto(wire, dst) {
    checkLength(wire, dst.length, 4);
    reduceInto('sum', dst, f32(wire.subarray(0, dst.byteLength)));
  },
  viewFloat32: (wire) => (wire.byteOffset % 4 === 0 ? f32(wire) : undefined),
};

const CODECS: Record<WireDtype, WireCodec> = { fp32, fp16, bf16 };

export function wireCodec(dtype: WireDtype): WireCodec {
  const codec = CODECS[dtype];
  if (!codec) throw new RangeError(`unknown wire dtype '${dtype}' (fp32, fp16 or bf16)`);
  return codec;
}

/** The fp32 value `x` takes after one trip over the wire in `dtype` (for references and tests). */
export function roundToWire(dtype: WireDtype, values: Float32Array): Float32Array {
  const codec = wireCodec(dtype);
  const out = new Float32Array(values.length);
  codec.decodeInto(codec.encode(values), out);
  return out;
}
