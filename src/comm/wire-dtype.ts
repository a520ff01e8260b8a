/**
 * How fp32 values travel on the wire. Accumulation always happens in fp32; a codec only turns fp32 values
 * into wire bytes and back. One `WireCodec` per `WireDtype`, so the collectives are written once for all.
 *
 * Each half-precision dtype is two loops and nothing else: `encodeBits` (fp32 bit patterns → 16-bit codes:
 * round to nearest, ties to even; subnormals; overflow to ±inf; NaN stays NaN, quiet) and `decodeBits` (exact).
 * Every operation — encode, decode, and the fused add-and-round of a ring hop — is built from those two, run
 * over blocks small enough to stay in L1, so the hop touches its payload in memory once instead of three times.
 * Those JS loops are the specification; native/half.c (when built) runs the same operations with the same bits
 * 13–46× faster (bench/RESULTS.md), behind the same `WireCodec`.
 */
import { type HalfKernels, loadHalfBinding } from './half-binding.ts';
import { addDivideInto, addDivideTo, reduceInto } from './reduce-op.ts';
import { loadShmBinding } from './shm-ring.ts';
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
   * One ring hop in one pass: `wire[i] ← round((value(wire[i]) + x[i]) / divisor)` for the `x.length` elements,
   * the sum rounded to fp32 before the division and the quotient to fp32 before the wire (exactly as
   * decode, `reduceInto`, divide, encode would). With `out`, also `out[i] ← value(new wire[i])`
   * (`out` may be `x` itself). With `into` (aligned, not overlapping `wire`), the new wire bytes are written
   * there and `wire` is only read: a hop computed straight into the next rank's ring. Returns the bytes written:
   * `into`, `wire` itself, or a copy when `wire` was misaligned.
   */
  addEncode(
    wire: Uint8Array,
    x: Float32Array,
    divisor: number,
    out?: Float32Array,
    into?: Uint8Array,
  ): Uint8Array;
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
// Int32, not Uint32: V8 keeps int32 lanes in registers, while uint32 values above 2^31 become doubles (1.35× slower).
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function checkLength(wire: Uint8Array, n: number, bytesPerElement: number): void {
  if (wire.byteLength < n * bytesPerElement) {
    throw new RangeError(`wire payload holds ${wire.byteLength} bytes, ${n * bytesPerElement} needed`);
  }
}

// The loops run over whole (sub)arrays, bounded by their length: V8 then drops the bounds checks, which offset
// indexing (`a[from + k]`) keeps, measured 1.2× slower.
/** `out[k] = code(bits[k])` for every k of `bits`. */
type EncodeBits = (bits: Int32Array, out: Uint16Array) => void;
/** `out[k] = fp32 bits of halves[k]` for every k of `halves`. */
type DecodeBits = (halves: Uint16Array, out: Int32Array) => void;

/** fp32 scratch for one block of a fused hop: 8 KiB, so it and the block's operands stay in L1. */
const BLOCK = 2048;
const block = new Float32Array(BLOCK);
const blockBits = bitsOf(block);

/** An own, aligned buffer that is not zeroed first (`allocUnsafeSlow`): the caller writes every byte. */
function freshBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

/**
 * A 16-bit wire format's loops in JS, from its two conversions: the specification, and the path wherever the
 * native binding is absent. Each runs over blocks small enough to stay in L1, so the fused hop touches its
 * payload in memory once instead of three times.
 */
function jsKernels(encodeBits: EncodeBits, decodeBits: DecodeBits): HalfKernels {
  return {
    encode(src, dst) {
      const bits = bitsOf(src);
      for (let s = 0; s < src.length; s += BLOCK) {
        const e = Math.min(s + BLOCK, src.length);
        encodeBits(bits.subarray(s, e), dst.subarray(s, e));
      }
    },
    decode(src, dst) {
      const bits = bitsOf(dst);
      for (let s = 0; s < dst.length; s += BLOCK) {
        const e = Math.min(s + BLOCK, dst.length);
        decodeBits(src.subarray(s, e), bits.subarray(s, e));
      }
    },
    addInto(src, dst) {
      for (let s = 0; s < dst.length; s += BLOCK) {
        const e = Math.min(s + BLOCK, dst.length);
        decodeBits(src.subarray(s, e), blockBits);
        reduceInto('sum', dst.subarray(s, e), block.subarray(0, e - s));
      }
    },
    addEncode(halves, x, divisor, out, into = halves) {
      const n = x.length;
      const outBits = out ? bitsOf(out) : undefined;
      for (let s = 0; s < n; s += BLOCK) {
        const e = Math.min(s + BLOCK, n);
        const codes = into.subarray(s, e);
        const acc = block.subarray(0, e - s);
        const xs = x.subarray(s, e);
        decodeBits(halves.subarray(s, e), blockBits);
        if (divisor === 1) {
          reduceInto('sum', acc, xs);
        } else {
          // fround first: the sum is an fp32 value before it is divided, as in the reference.
          for (let j = 0; j < acc.length; j++) acc[j] = Math.fround(acc[j] + xs[j]) / divisor;
        }
        encodeBits(blockBits.subarray(0, e - s), codes);
        // From the codes just written (still in L1), so `out` holds exactly what every peer will decode.
        if (outBits) decodeBits(codes, outBits.subarray(s, e));
      }
    },
  };
}

/**
 * A 16-bit wire format on top of its kernels (JS or native, same bits): the checks, alignment and buffers are
 * here once, so that both paths behave the same down to which buffer is returned. Exported for the tests, which
 * run it over each native variant; the collectives get theirs from `wireCodec`.
 */
export function halfCodec(dtype: WireDtype, kernels: HalfKernels): WireCodec {
  return {
    dtype,
    bytesPerElement: 2,
    encode(src, dst) {
      if (dst) checkLength(dst, src.length, 2);
      const bytes = dst && dst.byteOffset % 2 === 0 ? dst : freshBytes(src.length * 2);
      kernels.encode(src, new Uint16Array(bytes.buffer, bytes.byteOffset, src.length));
      if (dst && bytes !== dst) dst.set(bytes.subarray(0, src.length * 2));
      return dst ?? bytes;
    },
    decodeInto(wire, dst) {
      checkLength(wire, dst.length, 2);
      kernels.decode(u16(wire), dst);
    },
    addInto(wire, dst) {
      checkLength(wire, dst.length, 2);
      kernels.addInto(u16(wire), dst);
    },
    addEncode(wire, x, divisor, out, into) {
      const n = x.length;
      checkLength(wire, n, 2);
      if (out && out.length !== n) throw new RangeError(`addEncode: out has ${out.length} values, x ${n}`);
      const halves = u16(wire);
      if (into) {
        checkLength(into, n, 2);
        if (into.byteOffset % 2 !== 0) throw new RangeError('addEncode: into is not aligned to its codes');
        kernels.addEncode(halves, x, divisor, out, new Uint16Array(into.buffer, into.byteOffset, n));
        return into;
      }
      kernels.addEncode(halves, x, divisor, out);
      return halves.byteOffset === wire.byteOffset && halves.buffer === wire.buffer
        ? wire
        : new Uint8Array(halves.buffer, halves.byteOffset, halves.byteLength);
    },
    viewFloat32: () => undefined,
  };
}

/** The fp32 bit pattern of every 16-bit code, built on first use (256 KiB: one load per decoded element). */
function lazyTable(decode: (h: number) => number): () => Int32Array {
  let table: Int32Array | undefined;
  return () => {
    table ??= Int32Array.from({ length: 0x10000 }, (_, h) => decode(h));
    return table;
  };
}

/** A scalar conversion through the dtype's own loop, so that tests exercise the code the collectives run. */
function scalarEncoder(encodeBits: EncodeBits): (u: number) => number {
  const inBits = new Int32Array(1);
  const outHalf = new Uint16Array(1);
  return (u) => {
    inBits[0] = u;
    encodeBits(inBits, outHalf);
    return outHalf[0];
  };
}

// ---- fp16 (IEEE binary16) -------------------------------------------------------------------------------

const encodeF16: EncodeBits = (bits, out) => {
  for (let k = 0; k < bits.length; k++) {
    const u = bits[k];
    const abs = u & 0x7fffffff;
    let h: number;
    if (abs >= 0x38800000 && abs < 0x47800000) {
      // Normal half (the common case, first): rebias the exponent (127 → 15) and round the 13 dropped bits to
      // nearest even; a carry out of the significand bumps the exponent, up to inf from 65520 on.
      const r = abs - 0x38000000;
      h = (r + 0xfff + ((r >> 13) & 1)) >> 13;
    } else if (abs <= 0x33000000) {
      h = 0; // at most half the smallest subnormal (2^-25, a tie): rounds to the even zero
    } else if (abs < 0x38800000) {
      // Subnormal half (unit 2^-24): shift the full significand right by 14..24, rounding to nearest even.
      const shift = 126 - (abs >> 23);
      const mant = (abs & 0x7fffff) | 0x800000;
      h = (mant + (1 << (shift - 1)) - 1 + ((mant >> shift) & 1)) >> shift;
    } else if (abs <= 0x7f800000) {
      h = 0x7c00; // ≥ 65536 or inf
    } else {
      h = 0x7e00 | ((abs >> 13) & 0x3ff); // NaN: quiet, keeping the top of its payload
    }
    out[k] = ((u >> 16) & 0x8000) | h;
  }
};

/** binary16 bit pattern → fp32 bit pattern (exact). Builds the decode table; not on the hot path. */
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
const decodeF16: DecodeBits = (halves, out) => {
  const table = f16Table();
  for (let k = 0; k < halves.length; k++) out[k] = table[halves[k]];
};

/** fp32 bit pattern → binary16 bit pattern, round to nearest even. */
export const f32BitsToF16: (u: number) => number = scalarEncoder(encodeF16);

// ---- bf16 (the upper half of an fp32) -----------------------------------------------------------------

const encodeBf16: EncodeBits = (bits, out) => {
  for (let k = 0; k < bits.length; k++) {
    const u = bits[k];
    // Round to nearest even by adding below the cut (a carry into the exponent reaches inf by itself); a NaN
    // whose payload sits only in the dropped bits is kept NaN (quiet). No int32 overflow: only NaNs come near.
    out[k] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >> 16) & 1)) >>> 16;
  }
};

const decodeBf16: DecodeBits = (halves, out) => {
  for (let k = 0; k < halves.length; k++) out[k] = halves[k] << 16;
};

/** fp32 bit pattern → bfloat16 bit pattern, round to nearest even; overflow carries into inf by itself. */
export const f32BitsToBf16: (u: number) => number = scalarEncoder(encodeBf16);

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
  addEncode(wire, x, divisor, out, into) {
    checkLength(wire, x.length, 4);
    const values = f32(wire.subarray(0, x.byteLength));
    if (into) {
      checkLength(into, x.length, 4);
      if (into.byteOffset % 4 !== 0) throw new RangeError('addEncode: into is not aligned to its values');
      const sums = new Float32Array(into.buffer, into.byteOffset, x.length);
      // The owner's sum back into its own buffer: both written in one pass.
      if (out && out.buffer === x.buffer && out.byteOffset === x.byteOffset)
        addDivideInto(values, x, divisor, sums);
      else {
        addDivideTo(values, x, divisor, sums);
        out?.set(sums);
      }
      return into;
    }
    const native = loadShmBinding().binding;
    if (divisor === 1) reduceInto('sum', values, x);
    else if (native) native.addDivide(values, x, divisor);
    else for (let i = 0; i < values.length; i++) values[i] = Math.fround(values[i] + x[i]) / divisor;
    // A copy here beats a second store in the loop: TypedArray.set is memcpy, ~20× a JS loop per element.
    out?.set(values);
    return values.buffer === wire.buffer && values.byteOffset === wire.byteOffset ? wire : bytesOf(values);
  },
  viewFloat32: (wire) => (wire.byteOffset % 4 === 0 ? f32(wire) : undefined),
};

const JS_CODECS: Record<WireDtype, WireCodec> = {
  fp32,
  fp16: halfCodec('fp16', jsKernels(encodeF16, decodeF16)),
  bf16: halfCodec('bf16', jsKernels(encodeBf16, decodeBf16)),
};

let nativeCodecs: Record<WireDtype, WireCodec> | undefined;

/**
 * The codec for `dtype`: fp16 and bf16 run native/half.c's loops when the binding is built (the JS loops
 * cost ~1.3 ns per element, several times the transfer itself), the JS loops otherwise or with KD_HALF=off,
 * which is read on every call so that a test can compare both paths in one process.
 */
export function wireCodec(dtype: WireDtype): WireCodec {
  const native = loadHalfBinding().binding;
  if (native) {
    nativeCodecs ??= {
      fp32,
      fp16: halfCodec('fp16', native.fp16),
      bf16: halfCodec('bf16', native.bf16),
    };
  }
  const codec = (native ? nativeCodecs : JS_CODECS)?.[dtype];
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
