/**
 * Loads the fp16/bf16 wire codec's binding (native/build/kd_half.node, from native/half.c, built by
 * native/build.mjs at install time beside the BLAS binding but needing only a C compiler). The binding is
 * optional: when it is absent, fails to load, or KD_HALF=off, the loader says why and `wire-dtype.ts` runs its
 * JS loops, which are the specification the binding matches bit for bit.
 */
import { type NativeLoad, nativeModule } from '../base/native-module.ts';

/**
 * One 16-bit wire format's kernels in native/half.c, each the exact twin of the JS codec's loop (same bits).
 * Arrays are whole typed arrays, lengths in elements; the binding checks them and throws rather than write
 * outside one.
 */
export interface HalfKernels {
  /** `dst[i] = code(src[i])` for every i of `src`. */
  encode(src: Float32Array, dst: Uint16Array): void;
  /** `dst[i] = value(src[i])` for every i of `dst`. */
  decode(src: Uint16Array, dst: Float32Array): void;
  /** `dst[i] += value(src[i])` for every i of `dst`. */
  addInto(src: Uint16Array, dst: Float32Array): void;
  /**
   * `wire[i] = code((value(wire[i]) + x[i]) / divisor)` for every i of `x`; then `out[i] = value(wire[i])`. With
   * `into` (which must not overlap `wire`), the new codes go there instead and `wire` is only read.
   */
  addEncode(
    wire: Uint16Array,
    x: Float32Array,
    divisor: number,
    out: Float32Array | undefined,
    into?: Uint16Array,
  ): void;
}

/** What native/half.c exports: the kernels per format, for the fastest instruction set this CPU runs. */
export interface HalfBinding {
  fp16: HalfKernels;
  bf16: HalfKernels;
  /** The instruction set of `fp16` and `bf16`: "f16c" (AVX2 + F16C), "avx2" or "baseline". */
  variant: string;
  /** Every variant this CPU runs, by name (tests hold each against the JS codec). */
  variants: Record<string, { fp16: HalfKernels; bf16: HalfKernels }>;
}

const halfModule = nativeModule<HalfBinding>('kd_half', 'KD_HALF', 'the half-precision binding');

/**
 * The fp16/bf16 codec binding, or undefined and why not. KD_HALF=off is its own switch, so that KD_BLAS=off
 * still measures stock GEMMs with the fast codec.
 */
export const loadHalfBinding = (): NativeLoad<HalfBinding> => halfModule.load();
