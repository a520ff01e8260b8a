/** What a GEMM-backed kernel is: a function of a tfjs kernel call, written once for every backend. */
import type { NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import type { Gemm } from './gemm.ts';
import type { KernelLoops } from './loops.ts';
import type { TensorStorage } from './storage.ts';

export interface BlasKernelCall {
  inputs: NamedTensorInfoMap;
  attrs: NamedAttrMap;
  storage: TensorStorage;
  gemm: Gemm;
  /** The data movement around the GEMMs: in C with the binding, else the JS loops. */
  loops: KernelLoops;
}

/** A call a kernel declines (an attribute or dtype it does not implement); the stock kernel runs it instead. */
export class Unsupported {
  constructor(readonly reason: string) {}
}

export interface BlasKernel {
  /** The tfjs kernel name it implements, e.g. 'BatchMatMul'. */
  name: string;
  run(call: BlasKernelCall): TensorInfo | Unsupported;
}

/** Unsupported unless every tensor is float32 (the only dtype the GEMM handles). */
export function requireFloat32(...tensors: (TensorInfo | undefined)[]): Unsupported | undefined {
  const other = tensors.find((t) => t !== undefined && t.dtype !== 'float32');
  return other === undefined ? undefined : new Unsupported(`dtype ${other.dtype}`);
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((size, dim) => size * dim, 1);
}

/** The inputs a kernel cannot run without, by name (tfjs always passes them: a missing one is a bug). */
export function required<Name extends string>(
  inputs: NamedTensorInfoMap,
  ...names: Name[]
): Record<Name, TensorInfo> {
  const found = {} as Record<Name, TensorInfo>;
  for (const name of names) {
    const tensor = inputs[name];
    if (tensor === undefined) throw new Error(`kd-launch BLAS kernels: input '${name}' is missing`);
    found[name] = tensor;
  }
  return found;
}
