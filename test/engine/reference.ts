/**
 * Straightforward per-element reference optimizers (float64, one tensor at a time), written from the PyTorch /
 * DeepSpeed formulas independently of src/engine, to check the flat-buffer implementations against.
 */

export interface RefTensor {
  p: number[];
  g: number[];
}

export function refSgd(
  steps: RefTensor[][],
  init: number[][],
  hp: { lr: number; momentum: number; nesterov: boolean; wd: number },
): number[][] {
  const p = init.map((t) => [...t]);
  const buf = init.map((t) => t.map(() => 0));
  steps.forEach((grads, step) => {
    p.forEach((pt, k) => {
      for (let i = 0; i < pt.length; i++) {
        let d = grads[k].g[i] + hp.wd * pt[i];
        if (hp.momentum > 0) {
          buf[k][i] = step === 0 ? d : hp.momentum * buf[k][i] + d;
          d = hp.nesterov ? d + hp.momentum * buf[k][i] : buf[k][i];
        }
        pt[i] -= hp.lr * d;
      }
    });
  });
  return p;
}

export function refAdam(
  steps: RefTensor[][],
  init: number[][],
  hp: { lr: number; b1: number; b2: number; eps: number; wd: number; decoupled: boolean },
): number[][] {
  const p = init.map((t) => [...t]);
  const m = init.map((t) => t.map(() => 0));
  const v = init.map((t) => t.map(() => 0));
  steps.forEach((grads, step) => {
    const t = step + 1;
    p.forEach((pt, k) => {
      for (let i = 0; i < pt.length; i++) {
        let g = grads[k].g[i];
        if (hp.decoupled) pt[i] *= 1 - hp.lr * hp.wd;
        else g += hp.wd * pt[i];
        m[k][i] = hp.b1 * m[k][i] + (1 - hp.b1) * g;
        v[k][i] = hp.b2 * v[k][i] + (1 - hp.b2) * g * g;
        const mHat = m[k][i] / (1 - hp.b1 ** t);
        const vHat = v[k][i] / (1 - hp.b2 ** t);
        pt[i] -= (hp.lr * mHat) / (Math.sqrt(vHat) + hp.eps);
      }
    });
  });
  return p;
}

/** DeepSpeed FusedLamb: update without bias correction, step size lr·sqrt(bc2)/bc1, clamped trust ratio. */
export function refLamb(
  steps: RefTensor[][],
  init: number[][],
  hp: { lr: number; b1: number; b2: number; eps: number; wd: number; maxCoeff: number; minCoeff: number },
): number[][] {
  const p = init.map((t) => [...t]);
  const m = init.map((t) => t.map(() => 0));
  const v = init.map((t) => t.map(() => 0));
  steps.forEach((grads, step) => {
    const t = step + 1;
    const stepSize = (hp.lr * Math.sqrt(1 - hp.b2 ** t)) / (1 - hp.b1 ** t);
    p.forEach((pt, k) => {
      const u = pt.map((_, i) => {
        const g = grads[k].g[i];
        m[k][i] = hp.b1 * m[k][i] + (1 - hp.b1) * g;
        v[k][i] = hp.b2 * v[k][i] + (1 - hp.b2) * g * g;
        return m[k][i] / (Math.sqrt(v[k][i]) + hp.eps) + hp.wd * pt[i];
      });
      const wNorm = Math.hypot(...pt);
      const uNorm = Math.hypot(...u);
      let ratio = 1;
      if (wNorm > 0 && uNorm > 0) ratio = Math.min(hp.maxCoeff, Math.max(hp.minCoeff, wNorm / uNorm));
      for (let i = 0; i < pt.length; i++) pt[i] -= stepSize * ratio * u[i];
    });
  });
  return p;
}
