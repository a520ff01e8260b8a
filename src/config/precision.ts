/**
 * DeepSpeed's `fp16` and `bf16` sections, same keys, meanings and defaults, so users' configs carry over.
 * TensorFlow.js computes in fp32 everywhere: here half precision is what travels and what is stored, and the
 * fp32 master copy lives in the optimizer.
 */
import { z } from 'zod';

/**
 * `fp16`: half-precision gradients on the wire, with loss scaling so small gradients do not underflow.
 *
 *   fp16:
 *     enabled: true
 *     loss_scale: 0                # 0: dynamic scaling; > 0: this fixed scale
 *     initial_scale_power: 16      # dynamic scaling starts at 2^16
 *     loss_scale_window: 1000      # clean steps (no inf/NaN) before the scale doubles
 *     hysteresis: 2                # overflows it takes to halve the scale
 *     consecutive_hysteresis: false  # true: a clean step restores the hysteresis budget
 *     min_loss_scale: 1            # the scale never goes below; an overflow there means training diverged
 */
export const Fp16Spec = z.strictObject({
  enabled: z.boolean().default(false),
  loss_scale: z.number().min(0).default(0),
  // Kept to exponents whose power is a finite fp32 and not subnormal: the scale multiplies fp32 gradients.
  initial_scale_power: z.number().int().min(0).max(126).default(16),
  loss_scale_window: z.number().int().positive().default(1000),
  hysteresis: z.number().int().positive().default(2),
  consecutive_hysteresis: z.boolean().default(false),
  min_loss_scale: z.number().positive().default(1),
});
export type Fp16Spec = z.infer<typeof Fp16Spec>;

/** `bf16`: bfloat16 has fp32's exponent range, so it needs no loss scaling. */
export const Bf16Spec = z.strictObject({
  enabled: z.boolean().default(false),
});
export type Bf16Spec = z.infer<typeof Bf16Spec>;

/** The subset of a job `checkPrecisionExclusive` looks at (input or parsed: both have these optional keys). */
export interface PrecisionSections {
  fp16?: { enabled?: boolean } | undefined;
  bf16?: { enabled?: boolean } | undefined;
}

/** What zod's `superRefine` context offers; narrowed so this module needs no zod internals. */
export interface IssueSink {
  addIssue(issue: { code: 'custom'; path: (string | number)[]; message: string }): void;
}

/**
 * For the job schema's `superRefine`: DeepSpeed refuses fp16 and bf16 together; so do we, at config time,
 * naming both fields. The issue sits on `bf16.enabled` so the error points at a line of the file.
 */
export function checkPrecisionExclusive(job: PrecisionSections, ctx: IssueSink): void {
  if (job.fp16?.enabled === true && job.bf16?.enabled === true) {
    ctx.addIssue({
      code: 'custom',
      path: ['bf16', 'enabled'],
      message: 'fp16.enabled and bf16.enabled cannot both be true: choose one half-precision mode',
    });
  }
}
