/** The backends a job may name: `auto` picks the best one present (tensorflow-gpu → tensorflow → wasm → cpu). */
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
