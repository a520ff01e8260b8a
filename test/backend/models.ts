/** A small MLP and a small CNN as plain tfjs ops, with seeded weights and data, for the training-path tests. */
import * as tf from '@tensorflow/tfjs';
import { randomArray, sizeOf } from './helpers.ts';

export interface TinyModel {
  /** Creates fresh variables (on the current backend) and returns the loss of one batch as a function of them. */
  build(): { variables: tf.Variable[]; data: tf.Tensor[]; loss: () => tf.Scalar };
}

function variable(shape: number[], seed: number, scale: number): tf.Variable {
  return tf.variable(tf.tensor(randomArray(sizeOf(shape), seed), shape).mul(scale));
}

function labels(batch: number, classes: number): tf.Tensor2D {
  return tf.oneHot(
    tf.tensor1d(
      Array.from({ length: batch }, (_, i) => (i * 7) % classes),
      'int32',
    ),
    classes,
  ) as tf.Tensor2D;
}

/** 20 → 31 (relu, dropout) → 10 with bias through the fused op, softmax cross-entropy; batch 16. */
export const mlp: TinyModel = {
  build() {
    const w1 = variable([20, 31], 11, 0.3);
    const b1 = variable([31], 12, 0.1);
    const w2 = variable([31, 10], 13, 0.3);
    const b2 = variable([10], 14, 0.1);
    const x = tf.tensor(randomArray(16 * 20, 15), [16, 20]) as tf.Tensor2D;
    const y = labels(16, 10);
    const loss = () => {
      const hidden = tf.dropout(tf.relu(tf.add(tf.matMul(x, w1), b1)), 0.25, undefined, 42) as tf.Tensor2D;
      const logits = tf.fused.matMul({ a: hidden, b: w2 as tf.Tensor2D, bias: b2 });
      return tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar;
    };
    return { variables: [w1, b1, w2, b2], data: [x, y], loss };
  },
};

/** conv 3×3 same (+bias, relu) → maxPool 2 → conv 3×3 stride 2 valid → dense → softmax cross-entropy; batch 6. */
export const cnn: TinyModel = {
  build() {
    const k1 = variable([3, 3, 3, 8], 21, 0.3);
    const c1 = variable([8], 22, 0.1);
    const k2 = variable([3, 3, 8, 6], 23, 0.3);
    const w = variable([2 * 2 * 6, 5], 24, 0.3);
    const x = tf.tensor(randomArray(6 * 12 * 12 * 3, 25), [6, 12, 12, 3]) as tf.Tensor4D;
    const y = labels(6, 5);
    const loss = () => {
      let h = tf.relu(tf.add(tf.conv2d(x, k1 as tf.Tensor4D, 1, 'same'), c1)) as tf.Tensor4D;
      h = tf.maxPool(h, 2, 2, 'valid');
      h = tf.conv2d(h, k2 as tf.Tensor4D, 2, 'valid');
      const logits = tf.matMul(h.reshape([6, -1]) as tf.Tensor2D, w as tf.Tensor2D);
      return tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar;
    };
    return { variables: [k1, c1, k2, w], data: [x, y], loss };
  },
};

/** The loss and the gradient of every variable of one batch, on `backend`. */
export async function gradients(model: TinyModel, backend: string): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const { variables, data, loss } = model.build();
  const { value, grads } = tf.variableGrads(loss, variables);
  const out = [
    value.dataSync() as Float32Array,
    ...variables.map((v) => grads[v.name].dataSync() as Float32Array),
  ];
  tf.dispose([value, ...Object.values(grads), ...variables, ...data]);
  return out;
}

/** Plain SGD for `steps` steps; returns the loss before and after. */
export function train(model: TinyModel, steps: number, learningRate = 0.1): { first: number; last: number } {
  const { variables, data, loss } = model.build();
  const optimizer = tf.train.sgd(learningRate);
  const first = tf.tidy(() => loss().dataSync()[0]);
  for (let i = 0; i < steps; i++) {
    tf.tidy(() => {
      optimizer.minimize(loss, false, variables);
    });
  }
  const last = tf.tidy(() => loss().dataSync()[0]);
  tf.dispose([...variables, ...data]);
  optimizer.dispose();
  return { first, last };
}
