import type { WireDtype } from '../../src/comm/types.ts';
import type { ParsedJob } from '../../src/config/schema.ts';
import { LossScaler } from '../../src/engine/loss-scaler.ts';

/** The engine's `halfPrecision` for a job's `fp16` / `bf16` sections (the schema refuses both at once). */
export function halfPrecisionFor(
  job: ParsedJob,
): { dtype: 'fp16' | 'bf16'; scaler?: LossScaler } | undefined {
  if (job.fp16.enabled) return { dtype: 'fp16', scaler: LossScaler.fromSpec(job.fp16) };
  if (job.bf16.enabled) return { dtype: 'bf16' };
  return undefined;
}

/** The wire of activations and gradients between pipeline stages: the job's half precision, else `comm.dtype`. */
export function activationDtype(job: ParsedJob): WireDtype {
  return halfPrecisionFor(job)?.dtype ?? job.comm.dtype;
}
