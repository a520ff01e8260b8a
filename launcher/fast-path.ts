/**
 * Whether a job will train on the fast CPU path (the wasm backend's GEMM kernels on OpenBLAS), said before it
 * starts: a fresh machine without libopenblas-dev trains several times slower, and nothing else would tell.
 */
import { createRequire } from 'node:module';
import { loadBlasBinding } from '../src/backend/blas/native.ts';
import type { BackendName } from '../src/config/schema.ts';

/**
 * The README's main job from a fresh clone, BLAS kernels off against on (bench/RESULTS.md, "The fast path on a
 * fresh machine"): what a user without them should expect, in one figure.
 */
export const SLOWER_WITHOUT_BLAS = 5;

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
  return `the fast CPU path is off: ${load.reason}; training runs about ${SLOWER_WITHOUT_BLAS}× slower without it`;
}
