import { describe, expect, it } from 'vitest';
import {
  f16ToF32Bits,
  f32BitsToBf16,
  f32BitsToF16,
  roundToWire,
  wireCodec,
} from '../../src/comm/wire-dtype.ts';
import { bits, randomValues } from './world.ts';

const scalar = new Float32Array(1);
const scalarBits = new Uint32Array(scalar.buffer);
function bitsOf(x: number): number {
  scalar[0] = x;
  return scalarBits[0];
}
function floatOf(b: number): number {
  scalarBits[0] = b;
  return scalar[0];
}
const f16 = (x: number) => f32BitsToF16(bitsOf(x));
const bf16 = (x: number) => f32BitsToBf16(bitsOf(x));

/**
 * Independent reference for a 16-bit float with `mantBits` fraction bits and exponents emin..emax: scale |x| in
 * doubles (exact for powers of two) and round to nearest, ties to even.
 */
function referenceEncode(x: number, mantBits: number, emin: number, emax: number): number {
  const infinity = (2 * emax + 1) << mantBits; // all exponent bits set
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Number.POSITIVE_INFINITY) return sign | infinity;
  if (a === 0) return sign;
  let e = Math.max(emin, Math.floor(Math.log2(a)));
  while (e > emin && 2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  const y = a / 2 ** (e - mantBits);
  const fl = Math.floor(y);
  let q = y - fl > 0.5 || (y - fl === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  if (q === 2 ** (mantBits + 1)) {
    q /= 2;
    e++;
  }
  if (e > emax) return sign | infinity;
  if (q < 2 ** mantBits) return sign | q; // subnormal (e = emin)
  return sign | ((e + emax) << mantBits) | (q - 2 ** mantBits);
}

/** fp32 values from random bit patterns over the whole range, specials excluded. */
function randomFloats(n: number): number[] {
  const out: number[] = [];
  const words = new Uint32Array(randomValues(n, 42).buffer.slice(0));
  for (let i = 0; out.length < n; i++) {
    const w = Math.imul(words[i % n] ^ (i * 0x9e3779b9), 0x85ebca6b) >>> 0;
    const x = floatOf(w);
    if (Number.isFinite(x)) out.push(x);
  }
  return out;
}

describe('fp16', () => {
  it('rounds to nearest, ties to even', () => {
    expect(f16(1)).toBe(0x3c00);
    expect(f16(1 + 2 ** -11)).toBe(0x3c00); // tie, 0x3c00 is even
    expect(f16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, rounds up to the even 0x3c02
    expect(f16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(f16(-2.5)).toBe(0xc100);
  });
  it('handles subnormals, max finite, overflow, zeros, inf and NaN', () => {
    expect(f16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f16(2 ** -25)).toBe(0x0000); // tie with 0: even
    expect(f16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 units: even
    expect(f16(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up into the smallest normal
    expect(f16(1e-30)).toBe(0);
    expect(f16(floatOf(1))).toBe(0); // an fp32 subnormal
    expect(f16(-0)).toBe(0x8000);
    expect(f16(65504)).toBe(0x7bff);
    expect(f16(65519.99)).toBe(0x7bff);
    expect(f16(65520)).toBe(0x7c00); // the tie above max finite goes to inf
    expect(f16(-1e9)).toBe(0xfc00);
    expect(f16(Number.POSITIVE_INFINITY)).toBe(0x7c00);
    const nan = f16(Number.NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });
  it('matches the reference rounding on random fp32 values', () => {
    for (const x of randomFloats(20000)) expect(f16(x), `${x}`).toBe(referenceEncode(x, 10, -14, 15));
  });
  it('decodes every half exactly, and encodes it back', () => {
    const wrong: string[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const s = h & 0x8000 ? -1 : 1;
      const normal = s * 2 ** (e - 15) * (1 + m / 1024);
      const expected =
        e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Number.POSITIVE_INFINITY) : normal;
      const got = floatOf(f16ToF32Bits(h));
      if (!Object.is(got, expected)) wrong.push(`0x${h.toString(16)} → ${got}, expected ${expected}`);
      if (!Number.isNaN(got) && f16(got) !== h) wrong.push(`0x${h.toString(16)} does not round-trip`);
    }
    expect(wrong).toEqual([]);
  });
});

describe('bf16', () => {
  it('rounds to nearest even, saturates to inf, keeps NaN', () => {
    expect(bf16(1)).toBe(0x3f80);
    expect(bf16(1 + 2 ** -8)).toBe(0x3f80); // tie, even
    expect(bf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie, up to even
    expect(bf16(3.4028234663852886e38)).toBe(0x7f80); // fp32 max rounds up to inf
    expect(bf16(-Number.POSITIVE_INFINITY)).toBe(0xff80);
    expect(bf16(floatOf(1))).toBe(0); // smallest fp32 subnormal rounds to 0 (tie-free, below half a unit)
    expect(bf16(floatOf(0x10000))).toBe(1); // an fp32 subnormal that is a bf16 subnormal
    const nan = bf16(floatOf(0x7f800001)); // a NaN whose payload sits only in the dropped bits
    expect(Number.isNaN(floatOf(nan << 16))).toBe(true);
  });
  it('matches the reference rounding on random fp32 values', () => {
    for (const x of randomFloats(20000)) expect(bf16(x), `${x}`).toBe(referenceEncode(x, 7, -126, 127));
  });
});

describe('codecs', () => {
  it.each(['fp32', 'fp16', 'bf16'] as const)(
    '%s encode / decodeInto / addInto agree with the scalar conversions',
    (dtype) => {
      const codec = wireCodec(dtype);
      const x = randomValues(1001, 3, 1000);
      const wire = codec.encode(x);
      expect(wire.byteLength).toBe(1001 * codec.bytesPerElement);
      const decoded = new Float32Array(1001);
      codec.decodeInto(wire, decoded);
      const rounded = roundToWire(dtype, x);
      expect(decoded).toEqual(rounded);
      if (dtype === 'fp32') expect(decoded).toEqual(x);
      else expect(decoded[5]).toBe(floatOf(dtype === 'fp16' ? f16ToF32Bits(f16(x[5])) : bf16(x[5]) << 16));
      const acc = new Float32Array(1001).fill(0.5);
      codec.addInto(wire, acc);
      expect(acc).toEqual(rounded.map((v) => Math.fround(v + 0.5)));
      // A misaligned payload (as a small received frame may be) decodes the same.
      const shifted = new Uint8Array(wire.byteLength + 1).subarray(1);
      shifted.set(wire);
      const again = new Float32Array(1001);
      codec.decodeInto(shifted, again);
      expect(again).toEqual(decoded);
      // And encoding into a misaligned destination writes the same bytes.
      expect(codec.encode(x, new Uint8Array(wire.byteLength + 1).subarray(1))).toEqual(wire);
    },
  );
});

describe('addEncode (one ring hop in one pass)', () => {
  /** The three-pass reference: decode, add in fp32, divide, round to the wire. */
  function reference(dtype: 'fp32' | 'fp16' | 'bf16', wire: Uint8Array, x: Float32Array, d: number) {
    const codec = wireCodec(dtype);
    const a = new Float32Array(x.length);
    codec.decodeInto(wire, a);
    const sum = a.map((v, i) => Math.fround(Math.fround(v + x[i]) / d));
    return roundToWire(dtype, sum);
  }
  // Across several 2048-element blocks, with the values the fast path does not take: zeros, subnormals,
  // overflow, inf and NaN.
  const specials = [
    0,
    -0,
    2 ** -24,
    3 * 2 ** -26,
    2 ** -140,
    65519,
    65520,
    -7e4,
    1e39,
    Infinity,
    -Infinity,
    NaN,
  ];
  const x = randomValues(5003, 11, 3);
  specials.forEach((v, i) => {
    x[i * 401] = v;
  });

  it.each(['fp32', 'fp16', 'bf16'] as const)(
    '%s matches decode + add + divide + encode, bit for bit',
    (dtype) => {
      const codec = wireCodec(dtype);
      for (const d of [1, 2, 3]) {
        const wire = codec.encode(randomValues(5003, 12, 3));
        const expected = reference(dtype, wire, x, d);
        const out = new Float32Array(x.length);
        const written = codec.addEncode(wire.slice(), x, d, out);
        const decoded = new Float32Array(x.length);
        codec.decodeInto(written, decoded);
        expect(bits(decoded), `divisor ${d}`).toEqual(bits(expected));
        expect(bits(out)).toEqual(bits(expected));
        // In place over x (the all-reduce's owner writes its own chunk), and from a misaligned payload.
        const own = x.slice();
        const shifted = new Uint8Array(wire.byteLength + 1).subarray(1);
        shifted.set(wire);
        const again = codec.addEncode(shifted, own, d, own);
        expect(bits(own)).toEqual(bits(expected));
        const decodedAgain = new Float32Array(x.length);
        codec.decodeInto(again, decodedAgain);
        expect(bits(decodedAgain)).toEqual(bits(expected));
      }
    },
  );
});
