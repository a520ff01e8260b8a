/**
 * Distillation losses as functions of tensors, with TextBrewer's semantics (its `losses.py`): every one is a mean
 * over the batch (and over positions, heads or elements where TextBrewer averages them). `mask`, where taken, is
 * [batch, length] with 1 at valid positions and 0 at padding; masked positions contribute nothing and are not
 * counted in the mean.
 *
 * Shapes: logits [..., classes]; hidden states [batch, length, dim], or any [batch, ..., dim] (a CNN's
 * [batch, h, w, channels] is read as h·w positions; an MLP's [batch, dim] as one position); attention maps
 * [batch, heads, length, length] or [batch, length, length], as probabilities (the Net contract's `attention` tap).
 */
import { tf } from '../../backend/tf.ts';

/** One temperature for the batch, or one per row of the logits (flsw, cwsm): shape = logits' shape minus the last. */
export type Temperature = number | tf.Tensor;

/** The temperature broadcast against logits of shape [..., classes]. */
function perRow(t: Temperature): number | tf.Tensor {
  return typeof t === 'number' ? t : tf.expandDims(t, -1);
}

/**
 * Soft cross-entropy at temperature τ, scaled by τ² as Hinton et al. do:
 *
 *   τ² · mean over rows of −Σ_c softmax(z_T/τ)_c · log_softmax(z_S/τ)_c
 *
 * The cross-entropy is KL(p_T‖p_S) plus the teacher's entropy, which does not depend on the student: its gradient
 * is exactly the gradient of τ²·KL. The τ² keeps the soft term's gradient scale independent of τ (the softened
 * gradient shrinks as 1/τ²), so changing τ does not silently reweight it against the hard-label loss. TextBrewer's
 * kd_ce_loss omits the τ²; with a per-row τ each row's term is scaled by its own τ².
 */
export function kdCeLoss(logitsS: tf.Tensor, logitsT: tf.Tensor, temperature: Temperature): tf.Scalar {
  return tf.tidy(() => {
    const t = perRow(temperature);
    const pT = tf.softmax(tf.div(logitsT, t));
    const logPS = tf.logSoftmax(tf.div(logitsS, t));
    const ce = tf.neg(tf.sum(tf.mul(pT, logPS), -1));
    const t2 = typeof temperature === 'number' ? temperature * temperature : tf.square(temperature);
    return tf.mean(tf.mul(ce, t2)) as tf.Scalar;
  });
}

/** Mean squared error between the logits divided by τ (TextBrewer's kd_mse_loss): mean over every element. */
export function kdMseLoss(logitsS: tf.Tensor, logitsT: tf.Tensor, temperature: Temperature): tf.Scalar {
  return tf.tidy(() => {
    const t = perRow(temperature);
    return tf.mean(tf.squaredDifference(tf.div(logitsS, t), tf.div(logitsT, t))) as tf.Scalar;
  });
}

/**
 * The teacher's logits with, on every row where the teacher's top class is not the label, the top logit and the
 * label's logit swapped (TextBrewer's probability_shift): the label becomes the teacher's most probable class and
 * the rest of its distribution is kept. Labels index the last axis; `labels`' shape is `logits`' minus the last.
 */
export function probabilityShift(logitsT: tf.Tensor, labels: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const classes = logitsT.shape[logitsT.shape.length - 1];
    const top = tf.oneHot(tf.argMax(logitsT, -1), classes, 1, 0, 'float32');
    const truth = tf.oneHot(tf.cast(labels, 'int32'), classes, 1, 0, 'float32');
    const topValue = tf.sum(tf.mul(logitsT, top), -1, true);
    const truthValue = tf.sum(tf.mul(logitsT, truth), -1, true);
    // Where top and truth coincide both corrections cancel, leaving the row unchanged.
    const delta = tf.sub(truthValue, topValue);
    return tf.add(logitsT, tf.sub(tf.mul(top, delta), tf.mul(truth, delta)));
  });
}

/**
 * `x` divided by its L2 norm along `axis`. The ε under the square root keeps a zero vector (a dead ReLU, a padded
 * position) at zero with a finite gradient, where x/‖x‖ would give NaN for both; it is far below any real norm².
 */
export function l2Normalize(x: tf.Tensor, axis: number): tf.Tensor {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), axis, true), 1e-12)));
}

/** Any [batch, ..., dim] feature as [batch, positions, dim]. */
export function asSequence(x: tf.Tensor): tf.Tensor3D {
  const dim = x.shape[x.shape.length - 1];
  return tf.reshape(x, [x.shape[0], -1, dim]);
}

/** A [batch, length] mask as float32. */
function floatMask(mask: tf.Tensor): tf.Tensor2D {
  return tf.cast(mask, 'float32') as tf.Tensor2D;
}

/**
 * Mean squared error between hidden states (TextBrewer's hid_mse_loss). With a mask: squared errors of valid
 * positions only, divided by (valid positions · dim).
 */
export function hiddenMseLoss(stateS: tf.Tensor, stateT: tf.Tensor, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    if (mask === undefined) return tf.mean(tf.squaredDifference(stateS, stateT)) as tf.Scalar;
    const s = asSequence(stateS);
    const m = tf.expandDims(floatMask(mask), -1);
    const dim = s.shape[2];
    const sq = tf.mul(tf.squaredDifference(s, asSequence(stateT)), m);
    return tf.div(tf.sum(sq), tf.mul(tf.sum(m), dim)) as tf.Scalar;
  });
}

/** Mean of 1 − cos(s, t) over positions (DistilBERT's cosine loss, TextBrewer's cos_loss); masked positions excluded. */
export function cosLoss(stateS: tf.Tensor, stateT: tf.Tensor, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const s = asSequence(stateS);
    const t = asSequence(stateT);
    // torch's cosine_embedding_loss: ε inside each squared norm keeps zero vectors finite.
    const eps = 1e-12;
    const dot = tf.sum(tf.mul(s, t), -1);
    const norms = tf.sqrt(
      tf.mul(tf.add(tf.sum(tf.square(s), -1), eps), tf.add(tf.sum(tf.square(t), -1), eps)),
    );
    const oneMinusCos = tf.sub(1, tf.div(dot, norms));
    if (mask === undefined) return tf.mean(oneMinusCos) as tf.Scalar;
    const m = floatMask(mask);
    return tf.div(tf.sum(tf.mul(oneMinusCos, m)), tf.sum(m)) as tf.Scalar;
  });
}

/**
 * BERT-PKD's loss (TextBrewer's pkd_loss): the first position's vector ([CLS]) of student and teacher, each divided
 * by its L2 norm, then the squared distance summed over the dimension and averaged over the batch. A [batch, dim]
 * feature is used as it is.
 */
export function pkdLoss(stateS: tf.Tensor, stateT: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const first = (x: tf.Tensor) => {
      const v = x.rank === 2 ? x : tf.squeeze(tf.slice(asSequence(x), [0, 0, 0], [-1, 1, -1]), [1]);
      return l2Normalize(v, -1);
    };
    return tf.mean(tf.sum(tf.squaredDifference(first(stateS), first(stateT)), -1)) as tf.Scalar;
  });
}

/** The row/column mask m_i·m_j of [batch, length] as [batch, length, length]. */
function pairMask(m: tf.Tensor2D): tf.Tensor3D {
  return tf.mul(tf.expandDims(m, 2), tf.expandDims(m, 1)) as tf.Tensor3D;
}

/** An attention map's mask broadcastable against it: [batch, 1, L, L] for 4-d maps, [batch, L, L] for 3-d. */
function attentionPairMask(attention: tf.Tensor, m: tf.Tensor2D): tf.Tensor {
  const pm = pairMask(m);
  return attention.rank === 4 ? tf.expandDims(pm, 1) : pm;
}

/** Heads of an attention map (1 for a [batch, L, L] map). */
function heads(attention: tf.Tensor): number {
  return attention.rank === 4 ? (attention.shape[1] as number) : 1;
}

/**
 * Mean squared error between attention maps (TextBrewer's att_mse_loss). With a mask: only entries whose row and
 * column are both valid, divided by their number (heads · Σ_b valid_b²).
 */
export function attentionMseLoss(attS: tf.Tensor, attT: tf.Tensor, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    if (mask === undefined) return tf.mean(tf.squaredDifference(attS, attT)) as tf.Scalar;
    const m = floatMask(mask);
    const sq = tf.mul(tf.squaredDifference(attS, attT), attentionPairMask(attS, m));
    const valid = tf.mul(tf.sum(tf.square(tf.sum(m, 1))), heads(attS));
    return tf.div(tf.sum(sq), valid) as tf.Scalar;
  });
}

/**
 * Cross-entropy between attention distributions (TextBrewer's att_ce_loss): for every query row,
 * −Σ_j a_T[i,j] · log a_S[i,j], averaged over batch, heads and rows. The maps are probabilities, so the student's is
 * taken through a log (clamped at 1e-12 so a zero entry stays finite). With a mask: masked key columns drop out of
 * the sum and masked query rows out of the mean (divided by heads · Σ valid positions).
 */
export function attentionCeLoss(attS: tf.Tensor, attT: tf.Tensor, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const logS = tf.log(tf.maximum(attS, 1e-12));
    if (mask === undefined) return tf.neg(tf.mean(tf.sum(tf.mul(attT, logS), -1))) as tf.Scalar;
    const m = floatMask(mask);
    const cross = tf.mul(tf.mul(attT, logS), attentionPairMask(attS, m));
    const valid = tf.mul(tf.sum(m), heads(attS));
    return tf.neg(tf.div(tf.sum(cross), valid)) as tf.Scalar;
  });
}

/** Two layers' features of one model, for the losses that relate two layers. */
export type FeaturePair = readonly [tf.Tensor, tf.Tensor];

/** Features as [batch, positions, dim] with masked positions zeroed. */
function maskedSequence(x: tf.Tensor, m: tf.Tensor2D | undefined): tf.Tensor3D {
  const s = asSequence(x);
  return m === undefined ? s : (tf.mul(s, tf.expandDims(m, -1)) as tf.Tensor3D);
}

/**
 * The FSP ("flow of solution procedure") loss of Yim et al., TextBrewer's fsp_loss: each model's FSP matrix
 * G = F_aᵀ · F_b / length ([batch, dim_a, dim_b]) between its two layers' features, then the mean squared error
 * between student's and teacher's matrices. With a mask, masked positions are zeroed and `length` is each sample's
 * number of valid positions.
 */
export function fspLoss(stateS: FeaturePair, stateT: FeaturePair, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const m = mask === undefined ? undefined : floatMask(mask);
    const gram = ([a, b]: FeaturePair) => {
      const fa = maskedSequence(a, m);
      const fb = maskedSequence(b, m);
      const lengths = m === undefined ? fa.shape[1] : tf.reshape(tf.sum(m, 1), [-1, 1, 1]);
      return tf.div(tf.matMul(fa, fb, true, false), lengths);
    };
    return tf.mean(tf.squaredDifference(gram(stateS), gram(stateT))) as tf.Scalar;
  });
}

/**
 * TextBrewer's `mmd` (its variant of NST, un-normalised): each model's position-by-position similarity
 * G = F_a · F_bᵀ / dim_b ([batch, length, length]), then the mean squared error between student's and teacher's.
 * Student and teacher widths may differ. With a mask: only entries whose row and column are both valid, divided by
 * their number (Σ_b valid_b²).
 */
export function mmdLoss(stateS: FeaturePair, stateT: FeaturePair, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const gram = ([a, b]: FeaturePair) => {
      const fb = asSequence(b);
      return tf.div(tf.matMul(asSequence(a), fb, false, true), fb.shape[2]);
    };
    const sq = tf.squaredDifference(gram(stateS), gram(stateT));
    if (mask === undefined) return tf.mean(sq) as tf.Scalar;
    const m = floatMask(mask);
    return tf.div(tf.sum(tf.mul(sq, pairMask(m))), tf.sum(tf.square(tf.sum(m, 1)))) as tf.Scalar;
  });
}

/**
 * Neuron Selectivity Transfer (Huang & Wang, arXiv:1707.01219): each neuron (a feature channel) is a sample, its
 * activations over the positions its vector, L2-normalised; the loss is the squared MMD between the teacher's and
 * the student's neuron distributions under the polynomial kernel k(x, y) = (xᵀy)²:
 *
 *   MMD² = 1/C_T² Σ_ij k(t_i, t_j) + 1/C_S² Σ_ij k(s_i, s_j) − 2/(C_T·C_S) Σ_ij k(t_i, s_j)
 *
 * which equals ‖G_T − G_S‖²_F for G = F̂ · F̂ᵀ / C ([length, length], F̂ the normalised [length, C] features), the
 * form computed here; averaged over the batch. Widths may differ. For a pair of layers [a, b] G = F̂_a · F̂_bᵀ / C_b,
 * which is the MMD above when a = b. With a mask, masked positions are zeroed before normalising, so they neither
 * weigh in a neuron's norm nor in G.
 */
export function nstLoss(stateS: FeaturePair, stateT: FeaturePair, mask?: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const m = mask === undefined ? undefined : floatMask(mask);
    const normalised = (x: tf.Tensor) => l2Normalize(maskedSequence(x, m), 1) as tf.Tensor3D;
    const gram = ([a, b]: FeaturePair) => {
      const fb = normalised(b);
      return tf.div(tf.matMul(normalised(a), fb, false, true), fb.shape[2]);
    };
    return tf.mean(tf.sum(tf.squaredDifference(gram(stateS), gram(stateT)), [1, 2])) as tf.Scalar;
  });
}
