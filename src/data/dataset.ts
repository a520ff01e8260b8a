/**
 * Data of the user's own given as objects in a worker program (`prepare(ctx, {data})`) rather than as files: a
 * `Dataset` (`length` and `get(i)`, PyTorch's map-style dataset), read sample by sample as batches ask for them, or a
 * finite `tf.data.Dataset`, read whole into memory once, since the sampler takes every sample by index and a stream
 * has none. Every label is read and checked up front, as every format's are; the first sample sets the size of all
 * the others, checked for each sample whenever it is read. A problem is refused as one line naming the sample.
 */
import { tf } from '../backend/tf.ts';
import { checkedIndex, IndexView, type LabeledSet, MemorySet } from './labeled-set.ts';
import { refuse } from './refuse.ts';

/** One sample: its inputs (numbers, or a tensor of any shape, read flat) and its class index. */
export interface Sample {
  readonly x: ArrayLike<number> | tf.Tensor;
  readonly y: number;
}

/**
 * A classification set of the user's own: sample i is `get(i)`, for i below `length`. Each rank's set must hold the
 * same samples in the same order (as Accelerate's dataloaders: every process builds the same data, the sampler
 * gives each its share).
 */
export interface Dataset {
  readonly length: number;
  get(i: number): Sample;
  /** How many classes the labels index; default: the model's outputs. */
  readonly numClasses?: number;
}

/** A set of the user's own as the trainer reads it, with its first sample's shape (for messages). */
export interface OwnSet {
  readonly set: LabeledSet;
  readonly sampleShape: readonly number[];
}

export function isDataset(v: unknown): v is Dataset {
  const d = v as Partial<Dataset> | null | undefined;
  return typeof d?.length === 'number' && typeof d.get === 'function';
}

/** Known by its methods, not its class: the user's tfjs may be another copy than this package's. */
export function isTfDataset(v: unknown): v is tf.data.Dataset<tf.TensorContainer> {
  const d = v as Partial<tf.data.Dataset<tf.TensorContainer>> | null | undefined;
  return typeof d?.iterator === 'function' && typeof d.forEachAsync === 'function';
}

function isTensor(v: unknown): v is tf.Tensor {
  const t = v as Partial<tf.Tensor> | null | undefined;
  return Array.isArray(t?.shape) && typeof t.dataSync === 'function';
}

/** A sample's value count as a refusal shows it: `4`, or `4 (2×2)` for a shape of more than one axis. */
export function valuesOf(shape: readonly number[]): string {
  const n = shape.reduce((a, d) => a * d, 1);
  return shape.length > 1 ? `${n} (${shape.join('×')})` : `${n}`;
}

/** A value as a refusal shows it. */
function shown(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** Each sample against the first (its size), each label against the classes; refusals name the sample. */
class Checks {
  featureSize = 0;
  sampleShape: readonly number[] = [];

  constructor(
    readonly source: string,
    /** What a sample is called: a Dataset's `sample i`, a tf.data.Dataset's `element i`. */
    readonly noun: string,
    readonly classes: number,
  ) {}

  refuse(i: number, message: string): never {
    refuse(this.source, undefined, `${this.noun} ${i}: ${message}`);
  }

  /** x's value count, the same as sample 0's (which sets it). */
  size(x: unknown, i: number): number {
    const shape = isTensor(x)
      ? x.shape
      : Array.isArray(x) || ArrayBuffer.isView(x)
        ? [(x as ArrayLike<number>).length]
        : this.refuse(i, `x is ${shown(x)}: give numbers (an array, a typed array) or a tf.Tensor`);
    const size = shape.reduce((a, d) => a * d, 1);
    if (size === 0) this.refuse(i, `x has no values (shape ${shape.join('×')})`);
    if (this.featureSize === 0) {
      this.featureSize = size;
      this.sampleShape = shape;
    } else if (size !== this.featureSize) {
      this.refuse(
        i,
        `x has ${valuesOf(shape)} values, ${this.noun} 0 has ${valuesOf(this.sampleShape)}: every sample is the same size`,
      );
    }
    return size;
  }

  /** x's values, flat, each a finite number. */
  values(x: unknown, i: number): Float32Array {
    const out = new Float32Array(this.size(x, i));
    const values: ArrayLike<unknown> = isTensor(x) ? x.dataSync() : (x as ArrayLike<unknown>);
    for (let j = 0; j < out.length; j++) {
      const v = values[j];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        this.refuse(
          i,
          `x[${j}] is ${shown(v)}: inputs are finite numbers, flat (or a tf.Tensor of any shape)`,
        );
      }
      out[j] = v;
    }
    return out;
  }

  /** y as a class index: a whole number below `classes` (a number, or a tensor of one value). */
  label(y: unknown, i: number): number {
    let v = y;
    if (isTensor(y)) {
      if (y.size !== 1) {
        this.refuse(
          i,
          `y has ${y.size} values: a label is one class index (not one-hot, not a batch of labels)`,
        );
      }
      v = y.dataSync()[0];
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      this.refuse(i, `y is ${shown(v)}: a label is a class index, a whole number ≥ 0`);
    }
    if (v >= this.classes) {
      this.refuse(i, `y is ${v}, outside the ${this.classes} classes (labels 0 … ${this.classes - 1})`);
    }
    if (v > 255) this.refuse(i, `y is ${v}: labels are stored as bytes, at most 256 classes`);
    return v;
  }
}

/** A Dataset read through `get(i)`: a batch reads its samples' inputs only; the labels were read once. */
class DatasetSet implements LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly labels: Uint8Array;
  readonly #ds: Dataset;
  readonly #checks: Checks;

  constructor(ds: Dataset, checks: Checks) {
    const n = ds.length;
    if (!Number.isInteger(n) || n < 1) {
      refuse(
        checks.source,
        undefined,
        `length is ${n}: a Dataset holds a whole number of samples, at least 1`,
      );
    }
    // get(i) of every sample, once: its label, and its inputs' size (their values are read by batches).
    this.labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      tf.tidy(() => {
        const s = sampleOf(ds.get(i), i, checks);
        checks.size(s.x, i);
        this.labels[i] = checks.label(s.y, i);
      });
    }
    this.#ds = ds;
    this.#checks = checks;
    this.length = n;
    this.featureSize = checks.featureSize;
    this.numClasses = checks.classes;
  }

  /** Tensors `get(i)` makes are disposed once read (a tidy); tensors the Dataset holds are left to it. */
  readInputs(indices: ArrayLike<number>, from: number, count: number): Float32Array {
    const f = this.featureSize;
    const out = new Float32Array(count * f);
    for (let k = 0; k < count; k++) {
      const i = checkedIndex(this, indices[from + k]);
      tf.tidy(() => {
        out.set(this.#checks.values(sampleOf(this.#ds.get(i), i, this.#checks).x, i), k * f);
      });
    }
    return out;
  }

  subset(rows: ArrayLike<number>): LabeledSet {
    return new IndexView(this, rows);
  }
}

function sampleOf(s: unknown, i: number, checks: Checks): { x: unknown; y: unknown } {
  if (typeof s !== 'object' || s === null || !('x' in s) || !('y' in s)) {
    checks.refuse(i, `get(${i}) returned ${shown(s)}: a sample is {x, y}`);
  }
  return s;
}

/**
 * A Dataset as a set read by index: `get(i)` is called once per sample here, for the labels (checked, below
 * `classes`) and the inputs' size, then again for a sample's inputs whenever a batch takes it. `source` names
 * the set in refusals.
 */
export function readDataset(ds: Dataset, source: string, classes: number): OwnSet {
  const checks = new Checks(source, 'sample', classes);
  return { set: new DatasetSet(ds, checks), sampleShape: checks.sampleShape };
}

/**
 * A tf.data.Dataset of one sample per element, `{xs, ys}` (as `model.fitDataset` takes) or `{x, y}`, materialised:
 * read to its end into memory once (it must be finite), each element's tensors disposed once read (as fitDataset
 * does).
 */
export async function readTfDataset(
  ds: tf.data.Dataset<tf.TensorContainer>,
  source: string,
  classes: number,
): Promise<OwnSet> {
  if (ds.size === Number.POSITIVE_INFINITY) {
    refuse(
      source,
      undefined,
      'the tf.data.Dataset is infinite (repeat() without a count): give a finite one',
    );
  }
  const checks = new Checks(source, 'element', classes);
  const inputs: Float32Array[] = [];
  const labels: number[] = [];
  const it = await ds.iterator();
  for (let i = 0; ; i++) {
    const { value, done } = await it.next();
    if (done) break;
    try {
      const e = value as Record<string, unknown> | null;
      const [x, y] =
        typeof e === 'object' && e !== null && 'xs' in e && 'ys' in e
          ? [e['xs'], e['ys']]
          : typeof e === 'object' && e !== null && 'x' in e && 'y' in e
            ? [e['x'], e['y']]
            : checks.refuse(i, `the element is ${shown(e)}: give {xs, ys} (or {x, y}), one sample each`);
      inputs.push(checks.values(x, i));
      labels.push(checks.label(y, i));
    } finally {
      tf.dispose(value);
    }
  }
  if (labels.length === 0) refuse(source, undefined, 'the tf.data.Dataset has no elements');
  const all = new Float32Array(labels.length * checks.featureSize);
  inputs.forEach((v, i) => {
    all.set(v, i * checks.featureSize);
  });
  const set = new MemorySet({
    featureSize: checks.featureSize,
    numClasses: classes,
    inputs: all,
    labels: Uint8Array.from(labels),
  });
  return { set, sampleShape: checks.sampleShape };
}
