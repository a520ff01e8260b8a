/**
 * Whether a job will train on the fast CPU path (the wasm backend's GEMM kernels on OpenBLAS), said before it
 * starts: a fresh machine without libopenblas-dev trains several times slower, and nothing else would tell.
 */
import { createRequire } from 'node:module';
import { loadBlasBinding } from '../src/backend/blas/native.ts';
import type { BackendName } from '../src/config/schema.ts';

/**
 * How much slower a CNN trains on the stock kernels: the README's main job, BLAS kernels off against on, trained
 * its CNN teacher in 341.9 s against 29.5 s (the whole job, whose small MLPs are not GEMM-bound, 3.1×;
 * bench/RESULTS.md, "Engine speed … the CNN's loops in C").
 */
export const SLOWER_WITHOUT_BLAS = 11;

function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/** One line when a training job on this backend will run without the BLAS kernels; undefined otherwise. */
export function fastPathWarning(backend: BackendName): string | undefined {
  if (backend === 'tensorflow' || backend === 'tensorflow-gpu') return undefined;
  if (backend === 'auto' && (installed('@tensorflow/tfjs-node') || installed('@tensorflow/tfjs-node-gpu')))
    return undefined;
  const load = loadBlasBinding();
  if (load.binding) return undefined;
  return `the fast CPU path is off: ${load.reason}; a CNN trains about ${SLOWER_WITHOUT_BLAS}× slower without it`;
}
