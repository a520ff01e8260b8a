/** The L2 norm of the whole buffer (summed in float64, so a large buffer loses no precision). */
export function globalNorm(buf: Float32Array): number {
  let s = 0;
  for (let i = 0; i < buf.length; i++) s += buf[i] * buf[i];
  return Math.sqrt(s);
}

/**
 * torch.nn.utils.clip_grad_norm_: scale `grads` in place by maxNorm/(norm + 1e-6) when that is below 1.
 * Returns the norm before clipping.
 */
export function clipByGlobalNorm(grads: Float32Array, maxNorm: number): number {
  const norm = globalNorm(grads);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (let i = 0; i < grads.length; i++) grads[i] *= coef;
  return norm;
}
