import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type HalfKernels, loadHalfBinding } from '../../src/comm/half-binding.ts';
import {
  f16ToF32Bits,
  f32BitsToBf16,
  f32BitsToF16,
  halfCodec,
  roundToWire,
  type WireCodec,
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

const native = loadHalfBinding();
const NO_NATIVE = native.binding === undefined;
/** The kernel paths of the 16-bit codecs: JS always; native/half.c where it is built (else those tests skip). */
const PATHS = ['js', 'native'] as const;
type Path = (typeof PATHS)[number];

/** Runs `fn` with wireCodec() picking `path`'s kernels (KD_HALF is read on every wireCodec call). */
function onPath<T>(path: Path, fn: () => T): T {
  const saved = process.env.KD_HALF;
  if (path === 'js') process.env.KD_HALF = 'off';
  else delete process.env.KD_HALF;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.KD_HALF;
    else process.env.KD_HALF = saved;
  }
}

/** Sets KD_HALF for each test of a `describe.each(PATHS)` block. */
function usePath(path: Path): void {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.KD_HALF;
    if (path === 'js') process.env.KD_HALF = 'off';
    else delete process.env.KD_HALF;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.KD_HALF;
    else process.env.KD_HALF = saved;
  });
}

describe.each(PATHS)('codecs (%s kernels)', (path) => {
  usePath(path);
  const skip = path === 'native' && NO_NATIVE;
  if (skip) it.skip(`native kernels: ${native.reason}`, () => {});
  if (skip) return;

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

describe.each(PATHS)('addEncode, one ring hop in one pass (%s kernels)', (path) => {
  usePath(path);
  if (path === 'native' && NO_NATIVE) {
    it.skip(`native kernels: ${native.reason}`, () => {});
    return;
  }
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
        // Into another buffer (the next rank's ring): the same bytes there, the received wire left as it was.
        const received = wire.slice();
        const into = new Uint8Array(wire.byteLength);
        const intoOut = new Float32Array(x.length);
        expect(codec.addEncode(received, x, d, intoOut, into)).toBe(into);
        expect(into).toEqual(written);
        expect(received).toEqual(wire);
        expect(bits(intoOut)).toEqual(bits(expected));
        // Into another buffer with x itself as out (the owner's sum, back into its own buffer).
        const [ownInto, into2] = [x.slice(), new Uint8Array(wire.byteLength)];
        codec.addEncode(wire.slice(), ownInto, d, ownInto, into2);
        expect(into2).toEqual(written);
        expect(bits(ownInto)).toEqual(bits(expected));
      }
    },
  );
});

// ---- native/half.c against the JS codec, bit for bit -------------------------------------------------------

/** fp32 bit patterns that reach every branch of both encoders: each sign and exponent with edge mantissas
 * (zero, one, all ones, the fp16 and bf16 ties and their neighbours), every upper half with edge lower halves
 * (every NaN class, bf16's ties), and a dense sweep of fp16's subnormal range. */
function edgeBitPatterns(): Uint32Array {
  const out: number[] = [];
  const mantissas = [0, 1, 2, 0x7fffff, 0x400000, 0x1000, 0x1001, 0x0fff, 0x3000, 0x2000, 0x8000, 0x18000];
  for (let exp = 0; exp < 256; exp++) {
    for (const sign of [0, 0x80000000]) {
      for (const m of mantissas) out.push((sign | (exp << 23) | m) >>> 0);
    }
  }
  for (let hi = 0; hi < 0x10000; hi++) {
    for (const lo of [0, 1, 0x7fff, 0x8000, 0x8001, 0xffff]) out.push(((hi << 16) | lo) >>> 0);
  }
  // |x| from 2^-26 to 2^-14 (fp16 subnormals and the rounding into the smallest normal), every 61st pattern.
  for (let u = 0x32800000; u <= 0x38800000; u += 61) out.push(u, (u | 0x80000000) >>> 0);
  return Uint32Array.from(out);
}

/** Random fp32 bit patterns over the whole range, NaNs, infinities and fp32 subnormals included. */
function randomBitPatterns(n: number, seed: number): Uint32Array {
  const out = new Uint32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (t ^ (t >>> 14)) >>> 0;
  }
  return out;
}

/** The first index where two arrays of the same kind differ, or -1 (vitest's deep toEqual is slow at 10^5). */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * The first index where two fp32 results differ, or -1. Where both operands of a sum were NaN, IEEE 754 leaves
 * open whose payload the result keeps: half.c keeps the right operand's, as V8's x86-64 code does, so there the
 * bits must match on x64 and elsewhere only both be NaN.
 */
function firstFloatDifference(got: Float32Array, expected: Float32Array, bothNaN: Uint8Array): number {
  const [g, e] = [bits(got), bits(expected)];
  if (g.length !== e.length) return Math.min(g.length, e.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] === e[i]) continue;
    const open = bothNaN[i] === 1 && process.arch !== 'x64';
    if (!(open && Number.isNaN(got[i]) && Number.isNaN(expected[i]))) return i;
  }
  return -1;
}

const asFloats = (u: Uint32Array) => new Float32Array(u.buffer, u.byteOffset, u.length);
const DTYPES = ['fp16', 'bf16'] as const;

const js = (dtype: 'fp16' | 'bf16') => onPath('js', () => wireCodec(dtype));
type Variant = [name: string, kernels: { fp16: HalfKernels; bf16: HalfKernels } | undefined];
const VARIANTS: Variant[] = Object.entries(native.binding?.variants ?? {});

// Every variant this CPU runs (baseline, avx2, f16c on x86-64), each over the shared codec, against the JS one.
describe.each(VARIANTS.length > 0 ? VARIANTS : [['none', undefined] satisfies Variant])(
  'native/half.c, %s kernels, against the JS codec',
  (_name, kernels) => {
    if (kernels === undefined) {
      it.skip(`native kernels: ${native.reason}`, () => {});
      return;
    }
    const nat = (dtype: 'fp16' | 'bf16') => halfCodec(dtype, kernels[dtype]);

    it.each(DTYPES)('%s encodes every edge and random fp32 value to the same code', (dtype) => {
      for (const patterns of [edgeBitPatterns(), randomBitPatterns(200_003, 5)]) {
        const values = asFloats(patterns);
        const expected = js(dtype).encode(values);
        const got = nat(dtype).encode(values);
        const at = firstDifference(got, expected) >> 1;
        expect(at, `fp32 bits 0x${patterns[at]?.toString(16)}`).toBe(-1);
      }
    });

    it.each(DTYPES)('%s decodes every one of the 65,536 codes to the same bits', (dtype) => {
      const codes = new Uint8Array(Uint16Array.from({ length: 0x10000 }, (_, h) => h).buffer);
      const expected = new Float32Array(0x10000);
      const got = new Float32Array(0x10000);
      js(dtype).decodeInto(codes, expected);
      nat(dtype).decodeInto(codes, got);
      const at = firstDifference(bits(got), bits(expected));
      expect(at, `code 0x${at.toString(16)}`).toBe(-1);
    });

    /**
     * Wire codes over every class (NaN, inf, subnormal, max finite…) and addends with specials, overflow and
     * NaNs of any payload, some lanes NaN on both sides (`bothNaN`).
     */
    function hopInputs(dtype: 'fp16' | 'bf16', n: number, seed: number) {
      const codes = Uint16Array.from(randomBitPatterns(n, seed), (u) => u & 0xffff);
      const x = randomValues(n, seed + 1, 3);
      // Zeros, fp16 subnormals and their ties, an fp32 subnormal, 2^-11 (half an fp16 unit at 1), fp16's max
      // finite and the tie above it, fp32's max, infinities, NaN.
      const specials = [0, -0, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -140, 2 ** -11, 65504, 65519, 65520];
      specials.push(-7e4, 3.4e38, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN);
      for (let i = 0; i < n; i += 7) x[i] = specials[(i / 7) % specials.length];
      const anyBits = asFloats(randomBitPatterns(n, seed + 2));
      for (let i = 3; i < n; i += 11) x[i] = anyBits[i]; // NaNs (quiet and signalling), fp32 subnormals…
      const nanBits = randomBitPatterns(n, seed + 3);
      const nanCode = dtype === 'fp16' ? 0x7c00 : 0x7f80;
      const payloadMask = dtype === 'fp16' ? 0x3ff : 0x7f;
      for (let i = 5; i < n; i += 13) {
        codes[i] = (nanBits[i] & 0x8000) | nanCode | (nanBits[i] & payloadMask || 1);
        new Uint32Array(x.buffer, 4 * i, 1)[0] =
          (nanBits[i] & 0x80000000) | 0x7f800000 | (nanBits[i] >>> 9 || 1);
      }
      const wire = new Uint8Array(codes.buffer);
      const decoded = new Float32Array(n);
      js(dtype).decodeInto(wire, decoded);
      const bothNaN = Uint8Array.from(decoded, (v, i) => (Number.isNaN(v) && Number.isNaN(x[i]) ? 1 : 0));
      return { wire, x, bothNaN };
    }

    it.each(DTYPES)('%s addInto adds the same bits', (dtype) => {
      const { wire, x, bothNaN } = hopInputs(dtype, 10_007, 21);
      const expected = x.slice();
      const got = x.slice();
      js(dtype).addInto(wire, expected);
      nat(dtype).addInto(wire, got);
      expect(firstFloatDifference(got, expected, bothNaN)).toBe(-1);
    });

    it.each(DTYPES)('%s addEncode writes the same wire and out, for every divisor and out', (dtype) => {
      // 1: no division; 2, 3, 7: an fp32 divisor (divided in float natively); 0.1, 1/3: divided in double.
      for (const divisor of [1, 2, 3, 7, 0.1, 1 / 3]) {
        const { wire, x, bothNaN } = hopInputs(dtype, 10_007, 31 + divisor);
        for (const outKind of ['none', 'separate', 'x itself', 'into another buffer'] as const) {
          const run = (codec: WireCodec) => {
            const own = x.slice();
            const out =
              outKind === 'none' ? undefined : outKind === 'x itself' ? own : new Float32Array(x.length);
            // With a separate out, misaligned by one byte as a received frame may be: the codec copies, both
            // paths alike.
            const payload =
              outKind === 'separate' ? new Uint8Array(wire.byteLength + 1).subarray(1) : wire.slice();
            payload.set(wire);
            const into = outKind === 'into another buffer' ? new Uint8Array(wire.byteLength) : undefined;
            // Decoded by the JS codec (one fp32 per code, exactly), to compare as fp32 results.
            const written = new Float32Array(x.length);
            js(dtype).decodeInto(codec.addEncode(payload, own, divisor, out, into), written);
            if (into) expect(payload, 'the wire is only read').toEqual(wire);
            return { written, out: out ? out.slice() : new Float32Array(0) };
          };
          const expected = run(js(dtype));
          const got = run(nat(dtype));
          const where = `divisor ${divisor}, out ${outKind}, at`;
          expect(firstFloatDifference(got.written, expected.written, bothNaN), where).toBe(-1);
          expect(firstFloatDifference(got.out, expected.out, bothNaN), where).toBe(-1);
        }
      }
    });
  },
);

describe.skipIf(NO_NATIVE)(`native/half.c's binding (${native.reason ?? 'built'})`, () => {
  it('throws instead of writing outside an array', () => {
    const kernels = native.binding?.fp16;
    if (!kernels) throw new Error('unreachable: skipped without the binding');
    expect(() => kernels.encode(new Float32Array(8), new Uint16Array(7))).toThrow(RangeError);
    expect(() => kernels.decode(new Uint16Array(7), new Float32Array(8))).toThrow(RangeError);
    expect(() => kernels.addInto(new Uint16Array(7), new Float32Array(8))).toThrow(RangeError);
    expect(() => kernels.addEncode(new Uint16Array(7), new Float32Array(8), 1, undefined)).toThrow(
      RangeError,
    );
    expect(() => kernels.addEncode(new Uint16Array(8), new Float32Array(8), 1, new Float32Array(7))).toThrow(
      RangeError,
    );
    const wire = new Uint16Array(16);
    expect(() => kernels.addEncode(wire, new Float32Array(8), 1, undefined, new Uint16Array(7))).toThrow(
      /into is shorter than x or overlaps the wire/,
    );
    expect(() => kernels.addEncode(wire, new Float32Array(8), 1, undefined, wire.subarray(4))).toThrow(
      /overlaps the wire/,
    );
    const wrongType = new Float32Array(8) as unknown as Uint16Array;
    expect(() => kernels.decode(wrongType, new Float32Array(8))).toThrow(TypeError);
  });

  it('KD_HALF=off runs the JS loops, and the default runs the native ones', () => {
    const { binding } = native;
    if (!binding) throw new Error('unreachable: skipped without the binding');
    const spy = vi.spyOn(binding.fp16, 'addEncode');
    try {
      const x = randomValues(100, 1);
      js('fp16').addEncode(js('fp16').encode(x), x, 2);
      expect(spy).not.toHaveBeenCalled();
      const codec = onPath('native', () => wireCodec('fp16'));
      codec.addEncode(codec.encode(x), x, 2);
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      spy.mockRestore();
    }
  });
});
