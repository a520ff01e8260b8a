// Builds a small CNN with TensorFlow.js layers and saves it with model.save, as you would your own model: kd-launch
// then trains it from examples/user-model/job.yaml (model: {path: ./model}). Seeded initialisers: the same model
// on every run. Run: npx tsx examples/user-model/make-model.ts
import * as tf from '@tensorflow/tfjs';
import { modelDirHandler } from 'kd-launch/model-dir';

const init = (seed: number) => ({ kernelInitializer: tf.initializers.heNormal({ seed }) });
const model = tf.sequential({
  layers: [
    tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 16, kernelSize: 3, activation: 'relu', ...init(1) }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.conv2d({ filters: 32, kernelSize: 3, activation: 'relu', ...init(2) }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 128, activation: 'relu', ...init(3) }),
    tf.layers.dropout({ rate: 0.4 }),
    tf.layers.dense({ units: 10, activation: 'softmax', ...init(4) }),
  ],
});
await model.save(modelDirHandler(new URL('./model', import.meta.url).pathname));
console.log(`saved ${model.countParams()} parameters to examples/user-model/model`);
