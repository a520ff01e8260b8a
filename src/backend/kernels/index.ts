/**
 * Kernels of ours for a backend, independent of the BLAS path (needed with or without it): those the backend
 * lacks and kd-launch's models need, registered only where the backend has none (a later tfjs release that ships
 * its own keeps it), and those that do what the backend's own kernel does with less work, registered in its place.
 */
import type { KernelConfig } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import { identityWasmConfig } from './identity.ts';
import { unsortedSegmentSumWasmConfig } from './unsorted-segment-sum.ts';

const MISSING: readonly KernelConfig[] = [unsortedSegmentSumWasmConfig];
const LIGHTER: readonly KernelConfig[] = [identityWasmConfig];

/**
 * Registers on `backendName` each kernel of ours for it (see the module comment); returns the names registered.
 * Idempotent. Call it after the backend's package is imported (its registrations would otherwise come later).
 */
export function installKernels(backendName: string): string[] {
  const added: string[] = [];
  for (const config of [...MISSING, ...LIGHTER]) {
    if (config.backendName !== backendName) continue;
    const existing = tf.getKernel(config.kernelName, backendName);
    const keep = MISSING.includes(config)
      ? existing !== undefined
      : existing?.kernelFunc === config.kernelFunc;
    if (keep) continue;
    if (existing !== undefined) tf.unregisterKernel(config.kernelName, backendName);
    tf.registerKernel(config);
    added.push(config.kernelName);
  }
  return added;
}
