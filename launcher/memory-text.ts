/**
 * How memory figures read in the launcher's lines (`--dry-run`, the memory refusal). Apart from resources.ts,
 * which estimates them and loads the models and TensorFlow.js to do it, so that printing a plan loads neither.
 */
import type { WorkerMemory } from './resources.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Bytes as people read memory sizes: whole MiB below 1 GiB, GiB with one decimal above. */
export function gib(bytes: number): string {
  return bytes >= GiB ? `${(bytes / GiB).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`;
}

/** The estimate's parts, as the refusal and `--dry-run` print them. */
export function describeParts(m: WorkerMemory): string {
  const parts = `runtime ${gib(m.runtime)} + data ${gib(m.data)} + model states ${gib(m.modelStates)} + in flight ${gib(m.inFlight)} + activations ${gib(m.activations)}`;
  return m.notCounted.length > 0 ? `${parts}; not counted: ${m.notCounted.join(', ')}` : parts;
}
