// Writes examples/keras-teacher/teacher/ as tensorflowjs_converter writes a Keras 3 model: model.json in Keras 3's
// own serialisation (a Functional model, inbound nodes of keras tensors, batch_shape, dtype policies) and one
// weight shard. It stands in for the Keras model below, converted with
// `tensorflowjs_converter --input_format keras teacher.keras teacher/` — no Python on this machine, so the weights are
// a seeded Glorot/He initialisation rather than Keras-trained ones; put your converted model in teacher/ instead.
//
//   inputs = keras.Input((28, 28, 1))
//   stem = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
//   x = layers.BatchNormalization(name="stem_bn")(stem)
//   x = layers.ReLU(name="stem_relu")(x)
//   y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="block_conv")(x)
//   y = layers.BatchNormalization(name="block_bn")(y)
//   x = layers.Add(name="block_add")([x, y])
//   x = layers.ReLU(name="block_relu")(x)
//   x = layers.MaxPooling2D(2, name="pool")(x)
//   x = layers.Flatten(name="flat")(x)
//   x = layers.Dense(64, activation="relu", name="features")(x)
//   outputs = layers.Dense(10, activation="softmax", name="probs")(x)
//
// Run: node examples/keras-teacher/make-teacher.mjs
import { mkdirSync, writeFileSync } from 'node:fs';

const out = new URL('./teacher/', import.meta.url);
mkdirSync(out, { recursive: true });

/** mulberry32: a small seeded generator, so the teacher is the same on every run. */
let state = 7;
function random() {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const uniform = (n, limit) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * limit);
const fill = (n, v) => new Float32Array(n).fill(v);

const policy = {
  module: 'keras',
  class_name: 'DTypePolicy',
  config: { name: 'float32' },
  registered_name: null,
};
const tensor = (name) => ({
  class_name: '__keras_tensor__',
  config: { shape: null, dtype: 'float32', keras_history: [name, 0, 0] },
});
const layer = (class_name, name, config, inputs) => ({
  module: 'keras.layers',
  class_name,
  config: { name, trainable: true, dtype: policy, ...config },
  registered_name: null,
  name,
  inbound_nodes:
    inputs.length === 0
      ? []
      : [{ args: inputs.length === 1 ? [tensor(inputs[0])] : [inputs.map(tensor)], kwargs: {} }],
});

const weights = [];
/** Adds a weight to the manifest; He-uniform for kernels feeding a ReLU, Glorot otherwise. */
function weight(name, shape, values) {
  weights.push({ name, shape, values });
}
function conv(name, inputs, filters, kernel, strides, channelsIn) {
  const fanIn = kernel * kernel * channelsIn;
  weight(
    `${name}/kernel`,
    [kernel, kernel, channelsIn, filters],
    uniform(fanIn * filters, Math.sqrt(6 / fanIn)),
  );
  const config = { filters, kernel_size: [kernel, kernel], strides: [strides, strides], padding: 'same' };
  return layer(
    'Conv2D',
    name,
    { ...config, data_format: 'channels_last', use_bias: false, activation: 'linear' },
    inputs,
  );
}
function batchNorm(name, inputs, channels) {
  weight(`${name}/gamma`, [channels], fill(channels, 1));
  weight(`${name}/beta`, [channels], fill(channels, 0));
  weight(`${name}/moving_mean`, [channels], fill(channels, 0));
  weight(`${name}/moving_variance`, [channels], fill(channels, 1));
  return layer(
    'BatchNormalization',
    name,
    { axis: -1, momentum: 0.99, epsilon: 0.001, center: true, scale: true },
    inputs,
  );
}
function dense(name, inputs, units, unitsIn, activation) {
  const limit = activation === 'relu' ? Math.sqrt(6 / unitsIn) : Math.sqrt(6 / (unitsIn + units));
  weight(`${name}/kernel`, [unitsIn, units], uniform(unitsIn * units, limit));
  weight(`${name}/bias`, [units], fill(units, 0));
  return layer('Dense', name, { units, activation, use_bias: true }, inputs);
}

const layers = [
  layer('InputLayer', 'input_layer', { batch_shape: [null, 28, 28, 1], sparse: false }, []),
  conv('stem', ['input_layer'], 16, 3, 2, 1),
  batchNorm('stem_bn', ['stem'], 16),
  layer('ReLU', 'stem_relu', {}, ['stem_bn']),
  conv('block_conv', ['stem_relu'], 16, 3, 1, 16),
  batchNorm('block_bn', ['block_conv'], 16),
  layer('Add', 'block_add', {}, ['stem_relu', 'block_bn']),
  layer('ReLU', 'block_relu', {}, ['block_add']),
  layer('MaxPooling2D', 'pool', { pool_size: [2, 2], strides: [2, 2], padding: 'valid' }, ['block_relu']),
  layer('Flatten', 'flat', { data_format: 'channels_last' }, ['pool']),
  dense('features', ['flat'], 64, 7 * 7 * 16, 'relu'),
  dense('probs', ['features'], 10, 64, 'softmax'),
];

const model = {
  format: 'layers-model',
  generatedBy: 'keras v3.6.0',
  convertedBy: 'TensorFlow.js Converter v4.22.0',
  modelTopology: {
    keras_version: '3.6.0',
    backend: 'tensorflow',
    model_config: {
      module: 'keras.src.models.functional',
      class_name: 'Functional',
      config: {
        name: 'teacher',
        trainable: true,
        layers,
        input_layers: ['input_layer', 0, 0],
        output_layers: ['probs', 0, 0],
      },
      registered_name: 'Functional',
    },
  },
  weightsManifest: [
    {
      paths: ['group1-shard1of1.bin'],
      weights: weights.map(({ name, shape }) => ({ name, shape, dtype: 'float32' })),
    },
  ],
};

const bytes = Buffer.concat(weights.map((w) => Buffer.from(w.values.buffer)));
writeFileSync(new URL('model.json', out), JSON.stringify(model));
writeFileSync(new URL('group1-shard1of1.bin', out), bytes);
const count = weights.reduce((n, w) => n + w.values.length, 0);
console.log(
  `wrote a Keras 3 model as converted (${layers.length - 1} layers, ${count} values) to examples/keras-teacher/teacher`,
);
