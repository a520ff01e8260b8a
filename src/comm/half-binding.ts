/**
 * Loads the fp16/bf16 wire codec's binding (native/build/kd_half.node, from native/half.c, built by
 * native/build.mjs at install time beside the BLAS binding but needing only a C compiler). The binding is
 * optional: when it is absent, fails to load, or KD_HALF=off, the loader says why and `wire-dtype.ts` runs its
 * JS loops, which are the specification the binding matches bit for bit.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../base/package-root.ts';

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
  /** `wire[i] = code((value(wire[i]) + x[i]) / divisor)` for every i of `x`; then `out[i] = value(wire[i])`. */
  addEncode(wire: Uint16Array, x: Float32Array, divisor: number, out: Float32Array | undefined): void;
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

export type HalfBindingLoad =
  | { binding: HalfBinding; path: string; reason?: undefined }
  | { binding: undefined; path: string; reason: string };

export const HALF_BINDING_PATH = join(PACKAGE_ROOT, 'native', 'build', 'kd_half.node');

let loaded: HalfBindingLoad | undefined;

/**
 * The fp16/bf16 codec binding, or undefined and why not. KD_HALF=off — its own switch, so that KD_BLAS=off
 * still measures stock GEMMs with the fast codec — is read on every call, as KD_BLAS is; a successful load is
 * kept (a .node cannot be unloaded).
 */
export function loadHalfBinding(): HalfBindingLoad {
  const path = HALF_BINDING_PATH;
  if (process.env.KD_HALF === 'off') return { binding: undefined, path, reason: 'KD_HALF=off' };
  loaded ??= (() => {
    try {
      return { binding: createRequire(import.meta.url)(path) as HalfBinding, path };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason =
        code === 'MODULE_NOT_FOUND'
          ? 'the half-precision binding is not built (run `node native/build.mjs`; it needs a C compiler)'
          : `the half-precision binding failed to load: ${(err as Error).message}`;
      return { binding: undefined, path, reason };
    }
  })();
  return loaded;
}
