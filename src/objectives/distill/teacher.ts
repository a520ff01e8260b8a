/**
 * Teachers and adaptors. A teacher is a model with fixed weights that only ever runs inference; an adaptor says
 * where, in a model's outputs, the logits and each layer's hidden state and attention map are, so that any net (zoo
 * or loaded, teacher or student) takes part in distillation without being changed (TextBrewer's adaptors).
 */
import { tf } from '../../backend/tf.ts';
import { forwardBlocks, type Net, type NetOutput } from '../../engine/net.ts';

export type Feature = 'hidden' | 'attention';

/** A layer as the adaptor numbers it, or by the name of the block that exposes the feature. */
export type LayerRef = number | string;

/** A model in inference mode: its outputs for a batch of inputs. */
export interface Teacher {
  run(inputs: tf.Tensor): NetOutput;
}

/**
 * Where a model's logits and layer features are in its outputs. Layers are numbered as the adaptor likes, or named
 * by the block whose tap holds the feature.
 */
export interface Adaptor {
  logits(out: NetOutput): tf.Tensor;
  /** Layer `layer`'s hidden state, [batch, …, dim]. */
  hidden(out: NetOutput, layer: LayerRef): tf.Tensor;
  /** Layer `layer`'s attention probabilities, [batch, heads, length, length] or [batch, length, length]. */
  attention(out: NetOutput, layer: LayerRef): tf.Tensor;
  /** The taps (`<block>/<tap>`) that `feature` of `layer` reads, so that block-wise execution keeps them. */
  taps(feature: Feature, layer: LayerRef): readonly string[];
  /** [batch, length] of 1 (valid) / 0 (padding) for sequence inputs; undefined when every position counts. */
  mask?(inputs: tf.Tensor): tf.Tensor | undefined;
}

/**
 * An adaptor from lists of taps: layer i of `hidden` is the tap `layers.hidden[i]` (a `<block>/<tap>` name), the
 * same for `attention`; the logits are the net's output. This is how a model says, by layer name, where its
 * features are, e.g. TextBrewer's numbering for the zoo's Transformer (hidden 0 = the embeddings, attention 0 = the
 * first layer): `{hidden: ['embeddings/hidden', 'layer0/hidden', …], attention: ['layer0/attention', …]}`.
 */
export function tapAdaptor(
  layers: Readonly<Partial<Record<Feature, readonly string[]>>>,
  model = 'model',
): Adaptor {
  const tapOf = (feature: Feature, layer: LayerRef): string => {
    const list = layers[feature] ?? [];
    if (typeof layer === 'string') {
      const tap = `${layer}/${feature}`;
      if (list.includes(tap)) return tap;
      const named = list.map((t) => t.slice(0, t.lastIndexOf('/'))).join(', ') || 'none';
      throw new RangeError(
        `the ${model} has no ${feature} layer '${layer}' (its ${feature} layers: ${named})`,
      );
    }
    const name = list[layer];
    if (!Number.isInteger(layer) || name === undefined) {
      const range = list.length === 0 ? 'none' : `0…${list.length - 1}`;
      throw new RangeError(`the ${model} has no ${feature} layer ${layer} (its ${feature} layers: ${range})`);
    }
    return name;
  };
  const read = (out: NetOutput, feature: Feature, layer: LayerRef): tf.Tensor => {
    const name = tapOf(feature, layer);
    const tensor = out.taps[name];
    if (tensor === undefined) {
      const present = Object.keys(out.taps).join(', ') || 'none';
      throw new Error(
        `the ${model} exposes no tap '${name}' for ${feature} layer ${layer} (taps: ${present})`,
      );
    }
    return tensor;
  };
  return {
    logits: (out) => out.logits,
    hidden: (out, layer) => read(out, 'hidden', layer),
    attention: (out, layer) => read(out, 'attention', layer),
    taps: (feature, layer) => [tapOf(feature, layer)],
  };
}

/**
 * The adaptor of a net whose blocks expose `hidden` and `attention` taps, layer i = block i for both (so a
 * Transformer's attention layer 0 is its embeddings block, which has none: use `tapAdaptor` for another
 * numbering). Asking for a feature a block does not expose is an error naming the block and the taps present.
 */
export function blockTapAdaptor(net: Pick<Net, 'blocks' | 'kind'>): Adaptor {
  const names = (feature: Feature) => net.blocks.map((b) => `${b.name}/${feature}`);
  return tapAdaptor({ hidden: names('hidden'), attention: names('attention') }, `${net.kind} model`);
}

/**
 * A net with fixed weights as a teacher: inference mode (no dropout), parameters held as plain tensors (never
 * variables, so no optimizer or `variableGrads` can pick them up). An earlier checkpoint of the student is a
 * teacher like any other (self-distillation).
 */
export class NetTeacher implements Teacher {
  readonly #net: Net;
  readonly #params: tf.Tensor[][];

  /** `weights`: every block's parameters in `Net.init`'s layout (one array per parameter, block by block). */
  constructor(net: Net, weights: readonly Float32Array[]) {
    const specs = net.blocks.flatMap((b) => b.params);
    if (weights.length !== specs.length) {
      throw new RangeError(`the ${net.kind} has ${specs.length} parameter tensors, ${weights.length} given`);
    }
    let k = 0;
    this.#params = net.blocks.map((b) =>
      b.params.map((p) => {
        const w = weights[k++];
        const size = p.shape.reduce((a, d) => a * d, 1);
        if (w.length !== size) {
          throw new RangeError(`${b.name}/${p.name} has ${size} values, ${w.length} given`);
        }
        return tf.keep(tf.tensor(w, [...p.shape], 'float32'));
      }),
    );
    this.#net = net;
  }

  run(inputs: tf.Tensor): NetOutput {
    return forwardBlocks(this.#net, this.#params, inputs, { training: false, seed: 0 });
  }

  dispose(): void {
    for (const t of this.#params.flat()) t.dispose();
  }
}

/** A feature of one layer, e.g. the teacher's hidden state of layer 3. */
export interface FeatureRef {
  readonly feature: Feature;
  readonly layer: LayerRef;
}

/** Key of a feature in a teacher's prepared outputs. */
export function featureKey(ref: FeatureRef): string {
  return `${ref.feature}/${ref.layer}`;
}

/**
 * Where the teacher's outputs for a micro-batch come from: a live teacher, or outputs cached on disk. Called in
 * `prepare`, outside the gradient tape. Returns `logits` and every requested feature by `featureKey`.
 */
export interface TeacherSource {
  outputs(
    inputs: tf.Tensor,
    indices: Int32Array,
    features: readonly FeatureRef[],
  ): Readonly<Record<string, tf.Tensor>>;
}

/** A teacher run on every micro-batch, read through its adaptor. */
export class LiveTeacher implements TeacherSource {
  constructor(
    readonly teacher: Teacher,
    readonly adaptor: Adaptor,
  ) {}

  outputs(
    inputs: tf.Tensor,
    _indices: Int32Array,
    features: readonly FeatureRef[],
  ): Readonly<Record<string, tf.Tensor>> {
    // Everything the forward made besides what is returned (other taps, activations) is freed here.
    return tf.tidy(() => {
      const out = this.teacher.run(inputs);
      const kept: Record<string, tf.Tensor> = { logits: this.adaptor.logits(out) };
      for (const ref of features) {
        kept[featureKey(ref)] =
          ref.feature === 'hidden'
            ? this.adaptor.hidden(out, ref.layer)
            : this.adaptor.attention(out, ref.layer);
      }
      return kept;
    });
  }
}
