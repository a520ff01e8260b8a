/**
 * DeepSpeed's `fp16` and `bf16` sections, same keys, meanings and defaults, so users' configs carry over.
 * TensorFlow.js computes in fp32 everywhere: here half precision is what travels and what is stored, and the
 * fp32 master copy lives in the optimizer.
 */
import { z } from 'zod';

export const Fp16Spec = z
  .strictObject({
    enabled: z.boolean().default(false).describe('train with fp16'),
    loss_scale: z.number().min(0).default(0).describe('0: dynamic scaling; > 0: this fixed scale'),
    // Kept to exponents whose power is a finite fp32 and not subnormal: the scale multiplies fp32 gradients.
    initial_scale_power: z
      .number()
      .int()
      .min(0)
      .max(126)
      .default(16)
      .describe('dynamic scaling starts at 2^initial_scale_power'),
    loss_scale_window: z
      .number()
      .int()
      .positive()
      .default(1000)
      .describe('clean steps (no inf/NaN) before the scale doubles'),
    hysteresis: z.number().int().positive().default(2).describe('overflows it takes to halve the scale'),
    consecutive_hysteresis: z
      .boolean()
      .default(false)
      .describe('`true`: a clean step restores the hysteresis budget'),
    min_loss_scale: z
      .number()
      .positive()
      .default(1)
      .describe('the scale never goes below it; an overflow there means training diverged'),
  })
  .describe(
    'Half-precision (fp16) gradients and parameters on the wire and in store, with loss scaling so that small gradients do not underflow; an overflowing step is skipped on every rank.',
  );
export type Fp16Spec = z.infer<typeof Fp16Spec>;

export const Bf16Spec = z
  .strictObject({ enabled: z.boolean().default(false).describe('train with bf16') })
  .describe(
    "bfloat16 gradients and parameters on the wire and in store: fp32's exponent range, so no loss scaling.",
  );
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
