import { createRequire } from 'node:module';

/** The backends a job may name: `auto` picks the best one present (tensorflow-gpu → tensorflow → wasm → cpu). */
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** The packages of the optional native backends, by job-file name. */
export const NATIVE_PACKAGE = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
} as const;

/**
 * The backend `requested` will be, without starting one (for estimates made before any worker starts): `auto` is
 * tfjs-node(-gpu) where its package resolves, else wasm.
 */
export function expectedBackend(requested: BackendName): Exclude<BackendName, 'auto'> {
  if (requested !== 'auto') return requested;
  const require = createRequire(import.meta.url);
  for (const name of ['tensorflow-gpu', 'tensorflow'] as const) {
    try {
      require.resolve(NATIVE_PACKAGE[name]);
      return name;
    } catch {
      // not installed: the next one
    }
  }
  return 'wasm';
}

/**
 * Whether tensors made over resident memory (src/backend/resident.ts) hold copies of it on the backend named
 * `backend`: all but wasm, whose tensors are views of its heap.
 */
export function residentCopies(backend: string): boolean {
  return backend !== 'wasm';
}
