import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  attentionCeLoss,
  attentionMseLoss,
  cosLoss,
  fspLoss,
  hiddenMseLoss,
  kdCeLoss,
  kdMseLoss,
  mmdLoss,
  nstLoss,
  pkdLoss,
  probabilityShift,
} from '../../src/objectives/distill/losses.ts';

const value = (t: tf.Tensor) => t.dataSync()[0];
const softmax = (z: number[]) => {
  const e = z.map(Math.exp);
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('KD loss on logits', () => {
  const zS = [1, 2, 0];
  const zT = [2, 0, 1];

  it("ce: τ²·cross-entropy of softened distributions; its gradient is τ²·KL's: τ·(p_S − p_T)/N", () => {
    const tau = 2;
    const pT = softmax(zT.map((z) => z / tau));
    const pS = softmax(zS.map((z) => z / tau));
    const ce = -pT.reduce((a, p, c) => a + p * Math.log(pS[c]), 0);
    const kl = pT.reduce((a, p, c) => a + p * (Math.log(p) - Math.log(pS[c])), 0);
    const entropyT = -pT.reduce((a, p) => a + p * Math.log(p), 0);
    expect(ce).toBeCloseTo(kl + entropyT, 12);

    const logitsT = tf.tensor2d([zT, zT]);
    const logitsS = tf.tensor2d([zS, zS]);
    expect(value(kdCeLoss(logitsS, logitsT, tau))).toBeCloseTo(tau * tau * ce, 5);

    const grad = tf
      .grad((s: tf.Tensor) => kdCeLoss(s, logitsT, tau))(logitsS)
      .arraySync() as number[][];
    // d/dz_S [τ²·CE(p_T, softmax(z_S/τ))] averaged over N = 2 rows = τ·(p_S − p_T)/2 per row.
    for (let c = 0; c < 3; c++) expect(grad[0][c]).toBeCloseTo((tau * (pS[c] - pT[c])) / 2, 6);
    const klGrad = tf
      .grad((s: tf.Tensor) => {
        const logPS = tf.logSoftmax(tf.div(s, tau));
        const pTt = tf.softmax(tf.div(logitsT, tau));
        return tf.mul(tf.mean(tf.sum(tf.mul(pTt, tf.sub(tf.log(pTt), logPS)), -1)), tau * tau) as tf.Scalar;
      })(logitsS)
      .arraySync() as number[][];
    for (let c = 0; c < 3; c++) expect(grad[1][c]).toBeCloseTo(klGrad[1][c], 6);
  });

  it('ce with a temperature per row scales each row by its own τ²', () => {
    const ce = (tau: number) => {
      const pT = softmax(zT.map((z) => z / tau));
      const pS = softmax(zS.map((z) => z / tau));
      return -pT.reduce((a, p, c) => a + p * Math.log(pS[c]), 0);
    };
    const loss = kdCeLoss(tf.tensor2d([zS, zS]), tf.tensor2d([zT, zT]), tf.tensor1d([1, 3]));
    expect(value(loss)).toBeCloseTo((1 * ce(1) + 9 * ce(3)) / 2, 5);
  });

  it('mse: mean of squared differences of the logits divided by τ', () => {
    // ((1−3)/2)² = 1, ((2−0)/2)² = 1, ((0−0)/2)² = 0, ((4−0)/2)² = 4 → 6/4
    const loss = kdMseLoss(
      tf.tensor2d([
        [1, 2],
        [0, 4],
      ]),
      tf.tensor2d([
        [3, 0],
        [0, 0],
      ]),
      2,
    );
    expect(value(loss)).toBeCloseTo(1.5, 6);
  });

  it("probability shift swaps the teacher's top logit with the label's, only where the teacher is wrong", () => {
    const shifted = probabilityShift(
      tf.tensor2d([
        [1, 5, 2],
        [0, 1, 3],
      ]),
      tf.tensor1d([2, 2], 'int32'),
    );
    expect(shifted.arraySync()).toEqual([
      [1, 2, 5],
      [0, 1, 3],
    ]);
  });
});

describe('hidden-state matches', () => {
  // two samples, two positions, two dims
  const S = tf.tensor3d([
    [
      [1, 2],
      [3, 4],
    ],
    [
      [0, 1],
      [2, 0],
    ],
  ]);
  const T = tf.zerosLike(S);

  it('hidden_mse: mean over every element; with a mask over valid positions × dim only', () => {
    expect(value(hiddenMseLoss(S, T))).toBeCloseTo((1 + 4 + 9 + 16 + 0 + 1 + 4 + 0) / 8, 6);
    // valid: sample 0 position 0 ([1,2]), sample 1 both positions ([0,1], [2,0]) → (1+4 + 0+1 + 4+0) / (3·2)
    const mask = tf.tensor2d([
      [1, 0],
      [1, 1],
    ]);
    expect(value(hiddenMseLoss(S, T, mask))).toBeCloseTo(10 / 6, 6);
  });

  it('cos: mean of 1 − cos over positions, masked positions left out', () => {
    const s = tf.tensor3d([
      [
        [1, 0],
        [1, 1],
      ],
    ]);
    const t = tf.tensor3d([
      [
        [0, 1],
        [2, 2],
      ],
    ]);
    // cos = 0 and 1 → mean(1, 0)
    expect(value(cosLoss(s, t))).toBeCloseTo(0.5, 6);
    expect(value(cosLoss(s, t, tf.tensor2d([[0, 1]])))).toBeCloseTo(0, 6);
    expect(value(cosLoss(s, t, tf.tensor2d([[1, 0]])))).toBeCloseTo(1, 6);
  });

  it('pkd: first position, each vector normalised to unit length, squared distance summed, mean over batch', () => {
    const s = tf.tensor3d([
      [
        [3, 4],
        [9, 9],
      ],
      [
        [0, 2],
        [9, 9],
      ],
    ]);
    const t = tf.tensor3d([
      [
        [1, 0],
        [0, 0],
      ],
      [
        [0, 5],
        [1, 1],
      ],
    ]);
    // sample 0: [0.6, 0.8] vs [1, 0] → 0.16 + 0.64; sample 1: [0, 1] vs [0, 1] → 0
    expect(value(pkdLoss(s, t))).toBeCloseTo(0.4, 6);
    // the normalisation makes it blind to the scale of either side
    expect(value(pkdLoss(tf.mul(s, 10), tf.mul(t, 0.1)))).toBeCloseTo(0.4, 6);
    // [batch, dim] features are used as they are
    expect(value(pkdLoss(tf.tensor2d([[3, 4]]), tf.tensor2d([[1, 0]])))).toBeCloseTo(0.8, 6);
  });
});

describe('attention matches', () => {
  const S = tf.tensor4d([
    [
      [
        [0.5, 0.3, 0.2],
        [0.1, 0.6, 0.3],
        [0.3, 0.3, 0.4],
      ],
    ],
  ]);
  const T = tf.tensor4d([
    [
      [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [1 / 3, 1 / 3, 1 / 3],
      ],
    ],
  ]);
  const mask = tf.tensor2d([[1, 1, 0]]);

  it('attention_mse: mean over entries; masked: only entries with valid row and column', () => {
    const sq = [0.04, 0.01, 0.01, 0.01, 0.01, 0, (0.3 - 1 / 3) ** 2, (0.3 - 1 / 3) ** 2, (0.4 - 1 / 3) ** 2];
    expect(value(attentionMseLoss(S, T))).toBeCloseTo(sq.reduce((a, b) => a + b) / 9, 6);
    // rows 0–1 × columns 0–1: 0.04 + 0.01 + 0.01 + 0.01 over 1 head · 2²
    expect(value(attentionMseLoss(S, T, mask))).toBeCloseTo(0.07 / 4, 6);
  });

  it('attention_ce: −Σ_j a_T log a_S per row, mean over rows; masked rows and columns drop out', () => {
    const ln = Math.log;
    const row0 = 0.7 * ln(0.5) + 0.2 * ln(0.3) + 0.1 * ln(0.2);
    const row1 = 0.2 * ln(0.1) + 0.5 * ln(0.6) + 0.3 * ln(0.3);
    const row2 = (ln(0.3) + ln(0.3) + ln(0.4)) / 3;
    expect(value(attentionCeLoss(S, T))).toBeCloseTo(-(row0 + row1 + row2) / 3, 6);
    const masked = -(0.7 * ln(0.5) + 0.2 * ln(0.3) + (0.2 * ln(0.1) + 0.5 * ln(0.6))) / 2;
    expect(value(attentionCeLoss(S, T, mask))).toBeCloseTo(masked, 6);
    // two identical heads: the same mean (the count includes the heads)
    const two = (x: tf.Tensor4D) => tf.concat([x, x], 1);
    expect(value(attentionCeLoss(two(S), two(T), mask))).toBeCloseTo(masked, 6);
    // 3-d maps (no head axis) work the same
    expect(value(attentionCeLoss(tf.squeeze(S, [1]), tf.squeeze(T, [1]), mask))).toBeCloseTo(masked, 6);
  });
});

describe('two-layer matches', () => {
  const S0 = tf.tensor3d([
    [
      [1, 2],
      [3, 4],
    ],
  ]);
  const S1 = tf.tensor3d([
    [
      [1, 0],
      [0, 1],
    ],
  ]);
  const T0 = tf.tensor3d([
    [
      [2, 0],
      [0, 2],
    ],
  ]);
  const T1 = tf.tensor3d([
    [
      [1, 1],
      [1, 1],
    ],
  ]);

  it('fsp: mse between F_aᵀ·F_b / length of student and teacher', () => {
    // G_S = S0ᵀ·S1 / 2 = [[0.5, 1.5], [1, 2]]; G_T = T0ᵀ·T1 / 2 = [[1, 1], [1, 1]]
    expect(value(fspLoss([S0, S1], [T0, T1]))).toBeCloseTo((0.25 + 0.25 + 0 + 1) / 4, 6);
    // position 0 only: G_S = [1,2]ᵀ[1,0] = [[1,0],[2,0]], G_T = [2,0]ᵀ[1,1] = [[2,2],[0,0]]
    expect(value(fspLoss([S0, S1], [T0, T1], tf.tensor2d([[1, 0]])))).toBeCloseTo((1 + 4 + 4 + 0) / 4, 6);
  });

  it("mmd (TextBrewer's): mse between F_a·F_bᵀ / dim, widths free, masked entries out", () => {
    const eye = tf.tensor3d([
      [
        [1, 0],
        [0, 1],
      ],
    ]);
    const ones = tf.tensor3d([
      [
        [1, 1],
        [1, 1],
      ],
    ]);
    // G_S = I/2, G_T = ones·onesᵀ/2 = all ones
    expect(value(mmdLoss([eye, eye], [ones, ones]))).toBeCloseTo((0.25 + 1 + 1 + 0.25) / 4, 6);
    expect(value(mmdLoss([eye, eye], [ones, ones], tf.tensor2d([[1, 0]])))).toBeCloseTo(0.25, 6);
  });

  it('nst: the squared MMD of normalised neurons under k(x,y) = (xᵀy)², by its three kernel sums', () => {
    // student: one neuron over 2 positions, [3, 4] → [0.6, 0.8]; teacher: neurons [1, 0] and [0, 2] → e1, e2
    const s = tf.tensor3d([[[3], [4]]]);
    const t = tf.tensor3d([
      [
        [1, 0],
        [0, 2],
      ],
    ]);
    const k = (x: number[], y: number[]) => (x[0] * y[0] + x[1] * y[1]) ** 2;
    const sN = [[0.6, 0.8]];
    const tN = [
      [1, 0],
      [0, 1],
    ];
    let tt = 0;
    let ss = 0;
    let ts = 0;
    for (const a of tN) for (const b of tN) tt += k(a, b);
    for (const a of sN) for (const b of sN) ss += k(a, b);
    for (const a of tN) for (const b of sN) ts += k(a, b);
    const mmd2 = tt / 4 + ss / 1 - (2 * ts) / (2 * 1); // 0.5 + 1 − 1
    expect(mmd2).toBeCloseTo(0.5, 12);
    expect(value(nstLoss([s, s], [t, t]))).toBeCloseTo(mmd2, 6);
    // scale-free per neuron, and a masked position is as if absent
    expect(value(nstLoss([tf.mul(s, 7), s], [t, t]))).toBeCloseTo(mmd2, 6);
    const padded = (x: tf.Tensor3D) => tf.concat([x, tf.onesLike(x.slice([0, 0, 0], [1, 1, -1]))], 1);
    const m = tf.tensor2d([[1, 1, 0]]);
    expect(value(nstLoss([padded(s), padded(s)], [padded(t), padded(t)], m))).toBeCloseTo(mmd2, 6);
    // identical features: zero
    expect(value(nstLoss([t, t], [t, t]))).toBeCloseTo(0, 6);
  });

  it("hidden losses read a CNN's [batch, h, w, c] as h·w positions", () => {
    const s4 = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2, 2]);
    const t4 = tf.tensor4d([8, 7, 6, 5, 4, 3, 2, 1], [1, 2, 2, 2]);
    const asSeq = (x: tf.Tensor4D) => tf.reshape(x, [1, 4, 2]);
    expect(value(fspLoss([s4, s4], [t4, t4]))).toBeCloseTo(
      value(fspLoss([asSeq(s4), asSeq(s4)], [asSeq(t4), asSeq(t4)])),
      6,
    );
    expect(value(cosLoss(s4, t4))).toBeCloseTo(value(cosLoss(asSeq(s4), asSeq(t4))), 6);
  });

  it('stay finite, value and gradient, on all-zero vectors (a dead ReLU neuron, a zero first position)', () => {
    const s = tf.tensor3d([
      [
        [0, 1],
        [0, 2],
      ],
    ]);
    const t = tf.tensor3d([
      [
        [1, 1],
        [2, 0],
      ],
    ]);
    const grads = [
      tf.grad((x: tf.Tensor) => nstLoss([x, x], [t, t]))(s),
      tf.grad((x: tf.Tensor) => pkdLoss(x, t))(
        tf.tensor3d([
          [
            [0, 0],
            [1, 1],
          ],
        ]),
      ),
    ];
    for (const g of grads) expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
    expect(Number.isFinite(value(nstLoss([s, s], [t, t])))).toBe(true);
  });
});
