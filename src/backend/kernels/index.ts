/**
 * Kernels a backend lacks that kd-launch's models need, registered only where the backend has none (a later
 * tfjs release that ships its own keeps it). Independent of the BLAS path: these are needed with or without it.
 */
import type { KernelConfig } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { unsortedSegmentSumWasmConfig } from './unsorted-segment-sum.ts';

const MISSING: readonly KernelConfig[] = [unsortedSegmentSumWasmConfig];

/**
 * Registers on `backendName` each kernel of ours for it that the backend does not have; returns their names.
 * Idempotent. Call it after the backend's package is imported (its registrations would otherwise come later).
 */
export function installMissingKernels(backendName: string): string[] {
  const added: string[] = [];
  for (const config of MISSING) {
    if (config.backendName !== backendName) continue;
    if (tf.getKernel(config.kernelName, backendName) !== undefined) continue;
    tf.registerKernel(config);
    added.push(config.kernelName);
  }
  return added;
}
