/**
 * `seqcls`: a generated sequence-classification task that ships with the project (nothing to download), the
 * same from the same seed on every rank and every run.
 *
 * Each sample is `seq_len` token ids. Ids 0 … vocab − 2 are content tokens; id vocab − 1 is the marker, which
 * appears exactly once, at a random position before the last. The class is the class of the token right after
 * the marker, token t being of class t mod classes. Nothing about a single position tells the class: a model
 * must find the marker and read its neighbour, a relation between two positions that attention expresses
 * (a head that looks one position back, a feed-forward gate on "my left neighbour is the marker", then pooling);
 * every other token is a distractor that shares the classes.
 *
 * With `label_noise` p, exactly round(p · train_size) training samples, drawn from the data seed's own stream, get
 * another class than the rule's (uniform among the others); the inputs are those of the clean set, and the test
 * split is always clean, so that test accuracy still measures the rule.
 *
 * Token ids are stored as float values in the set's `inputs` (a `MemorySet`) (exact: ids are far below 2^24), as the MNIST
 * pixels are; the Transformer's embedding block casts them to int32.
 */
import { deriveSeed, Rng } from '../base/rng.ts';
import { SeqClsSpec } from '../config/seqcls.ts';
import { type LabeledSet, MemorySet } from './labeled-set.ts';

export { SeqClsSpec };

export interface SeqClsSplit {
  train: MemorySet;
  test: MemorySet;
}

/** Purpose tags of the two splits' streams (see `deriveSeed`). */
const TRAIN_STREAM = 0x5e01;
const TEST_STREAM = 0x5e02;
/** Its own stream, so that noise changes only labels: the inputs and the clean labels are those of `label_noise: 0`. */
const NOISE_STREAM = 0x5e03;

/** The marker's token id for a vocabulary. */
export function seqClsMarker(vocab: number): number {
  return vocab - 1;
}

/** The class of the sample `tokens` under the task's rule (undefined when it has no single marker). */
export function seqClsLabel(tokens: ArrayLike<number>, vocab: number, classes: number): number | undefined {
  const marker = seqClsMarker(vocab);
  let at = -1;
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] !== marker) continue;
    if (at >= 0) return undefined;
    at = i;
  }
  if (at < 0 || at === tokens.length - 1) return undefined;
  return tokens[at + 1] % classes;
}

/** Generates both splits of `spec` (zod-parsed, or with every field given). */
export function generateSeqCls(spec: SeqClsSpec): SeqClsSplit {
  const train = generateSplit(spec, spec.train_size, deriveSeed(spec.seed, TRAIN_STREAM));
  if (spec.label_noise > 0) corruptLabels(train, spec.label_noise, deriveSeed(spec.seed, NOISE_STREAM));
  return { train, test: generateSplit(spec, spec.test_size, deriveSeed(spec.seed, TEST_STREAM)) };
}

/** Gives round(rate · length) samples, the first of a seeded permutation, a class other than their own. */
function corruptLabels(set: LabeledSet, rate: number, seed: number): void {
  const rng = new Rng(seed);
  const classes = set.numClasses;
  const order = rng.permutation(set.length);
  const count = Math.round(rate * set.length);
  for (let i = 0; i < count; i++) {
    const s = order[i];
    // 1 … classes − 1 added mod classes: uniform over the other classes, never the sample's own.
    set.labels[s] = (set.labels[s] + 1 + rng.nextInt(classes - 1)) % classes;
  }
}

function generateSplit(spec: SeqClsSpec, length: number, seed: number): MemorySet {
  const { vocab, seq_len: seqLen, classes } = spec;
  const rng = new Rng(seed);
  const content = vocab - 1;
  const marker = seqClsMarker(vocab);
  // Classes in equal shares (the first length mod classes one more), in a random order.
  const labels = new Uint8Array(length);
  const order = rng.permutation(length);
  for (let i = 0; i < length; i++) labels[order[i]] = i % classes;
  const inputs = new Float32Array(length * seqLen);
  for (let s = 0; s < length; s++) {
    const row = s * seqLen;
    for (let i = 0; i < seqLen; i++) inputs[row + i] = rng.nextInt(content);
    const at = rng.nextInt(seqLen - 1);
    inputs[row + at] = marker;
    // A content token of the sample's class: labels[s] + classes·j for a uniform j among those below `content`.
    const perClass = Math.floor((content - 1 - labels[s]) / classes) + 1;
    inputs[row + at + 1] = labels[s] + classes * rng.nextInt(perClass);
  }
  return new MemorySet({ featureSize: seqLen, numClasses: classes, inputs, labels });
}
