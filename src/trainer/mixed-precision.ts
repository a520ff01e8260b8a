import type { JobBase } from '../config/schema.ts';
import { LossScaler } from '../engine/loss-scaler.ts';

/** The engine's `halfPrecision` for a job's `fp16` / `bf16` sections (the schema refuses both at once). */
export function halfPrecisionFor(job: JobBase): { dtype: 'fp16' | 'bf16'; scaler?: LossScaler } | undefined {
  if (job.fp16.enabled) return { dtype: 'fp16', scaler: LossScaler.fromSpec(job.fp16) };
  if (job.bf16.enabled) return { dtype: 'bf16' };
  return undefined;
}
