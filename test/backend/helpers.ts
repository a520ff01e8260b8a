/** Shared by the BLAS kernel tests: reproducible inputs, running one computation on a chosen backend, comparing. */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { expect } from 'vitest';
import { loadBlasBinding } from '../../src/backend/blas/native.ts';

export const binding = loadBlasBinding().binding;
export const NO_BINDING = binding === undefined;
export const NO_BINDING_REASON = `needs the OpenBLAS binding: ${loadBlasBinding().reason ?? ''}`;

/** Deterministic values in [-1, 1) (mulberry32), so a failing case fails the same way again. */
export function randomArray(size: number, seed: number): Float32Array {
  let state = seed >>> 0;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
  }
  return out;
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((s, d) => s * d, 1);
}

/** Runs `compute` with `backend` current and returns its result's values (every tensor it made disposed). */
export async function onBackend(
  backend: string,
  compute: () => tf.Tensor | tf.Tensor[],
): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const result = compute();
    return (Array.isArray(result) ? result : [result]).map((t) => t.dataSync() as Float32Array);
  });
}

/** Runs one kernel by name on the current backend, as the ops do. */
export function runKernel(name: string, inputs: Record<string, tf.Tensor>, attrs: object = {}): tf.Tensor {
  return tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
}

/** Equal within `tolerance` relative to the largest reference value (GEMMs sum in a different order). */
export function expectClose(actual: Float32Array, expected: Float32Array, tolerance = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]));
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  }
  expect(Number.isNaN(worst) ? Number.POSITIVE_INFINITY : worst).toBeLessThanOrEqual(
    tolerance * Math.max(scale, 1e-30),
  );
}
